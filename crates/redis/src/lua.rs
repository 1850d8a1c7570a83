//! The Lua scripts, one per transition (`src/lua/*.lua`), each run atomically by Redis with
//! Redis's clock (`TIME`) as the only time authority.
//!
//! Each script is its body after the shared prelude (`prelude.lua`), and the owner's writes also
//! get `owner.lua`. With the `audit` feature, every accepted write is appended to the audit list.

use std::sync::LazyLock;

use redis::Script;

const PRELUDE: &str = include_str!("lua/prelude.lua");
const OWNER: &str = include_str!("lua/owner.lua");

/// Every script, compiled once per process (a script is its text and SHA-1).
pub(crate) struct Scripts {
    pub(crate) hello: Script,
    pub(crate) read: Script,
    pub(crate) running: Script,
    pub(crate) acquire: Script,
    pub(crate) renew: Script,
    pub(crate) progress: Script,
    pub(crate) finish: Script,
    pub(crate) stop: Script,
    pub(crate) reap: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    hello: script(&[include_str!("lua/hello.lua")]),
    read: script(&[include_str!("lua/read.lua")]),
    running: script(&[include_str!("lua/running.lua")]),
    acquire: script(&[include_str!("lua/acquire.lua")]),
    renew: script(&[OWNER, include_str!("lua/renew.lua")]),
    progress: script(&[OWNER, include_str!("lua/progress.lua")]),
    finish: script(&[OWNER, include_str!("lua/finish.lua")]),
    stop: script(&[include_str!("lua/stop.lua")]),
    reap: script(&[include_str!("lua/reap.lua")]),
});

impl Scripts {
    pub(crate) fn all(&self) -> [&Script; 9] {
        [
            &self.hello,
            &self.read,
            &self.running,
            &self.acquire,
            &self.renew,
            &self.progress,
            &self.finish,
            &self.stop,
            &self.reap,
        ]
    }
}

fn script(parts: &[&str]) -> Script {
    let mut code = format!("local AUDIT = {}\n{PRELUDE}", cfg!(feature = "audit"));
    for part in parts {
        code.push_str(part);
    }
    Script::new(&code)
}
