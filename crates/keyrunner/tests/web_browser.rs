//! The `web` example's page in a real browser: load it, start a run with the Run button, see
//! the tokens arrive, stop it with the Stop button, see the stopped state and its reason.
//!
//! The browser is Debian's `chromium`, headless, driven over WebDriver by `chromedriver`
//! (`cargo xtask test` installs both when missing, as root). Without them this test fails; it
//! never skips. `CHROMEDRIVER` names another driver binary, `CHROME` another browser binary.
//!
//! Every wait has a deadline, the WebDriver session is closed even when an assertion fails, and
//! chromedriver's whole process group (the browser included) is killed when the test ends. A
//! screenshot of the page at the end is written to `target/tmp/web-dashboard.png`.

#[path = "../examples/web/agent.rs"]
mod agent;
#[path = "../examples/web/app.rs"]
mod app;
#[path = "../examples/web/closing.rs"]
mod closing;
mod web_support;
#[path = "../examples/web/wire.rs"]
mod wire;

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs};

use fantoccini::error::CmdError;
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use keyrunner::{Outcome, Reason};
use serde_json::json;

use crate::agent::RunRequest;
use crate::app::{AgentKey, SHUTDOWN_REASON};
use crate::web_support::Server;

/// The longest one wait for the page may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// The longest the whole test may take.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// The reason the page's Stop button gives.
const PAGE_STOP_REASON: &str = "stopped from the dashboard";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_and_stops_an_agent_in_a_real_browser() {
    let server = Server::start().await;
    let driver = Chromedriver::start();
    let browser = driver.connect().await;

    let outcome = tokio::time::timeout(
        TEST_DEADLINE,
        AssertUnwindSafe(drive_the_dashboard(&browser, server)).catch_unwind(),
    )
    .await;
    // Close the session before anything else: killing the driver alone leaves the browser up.
    let closed = tokio::time::timeout(DEADLINE, browser.close()).await;
    match outcome {
        Err(_) => panic!("the browser test took longer than {TEST_DEADLINE:?}"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Ok(Ok(Err(error))) => panic!("WebDriver command failed: {error}"),
        Ok(Ok(Ok(()))) => {}
    }
    closed
        .expect("the WebDriver session closes within the deadline")
        .expect("close the WebDriver session");
}

async fn drive_the_dashboard(browser: &Client, server: Server) -> Result<(), CmdError> {
    browser
        .update_timeouts(TimeoutConfiguration::new(
            Some(DEADLINE),
            Some(DEADLINE),
            Some(Duration::ZERO),
        ))
        .await?;
    browser.goto(&server.url("/")).await?;

    // The page watches the key in its form ("demo") from the start: a run started elsewhere
    // shows up there live.
    let demo = AgentKey::parse("demo").expect("a valid key");
    let run = RunRequest {
        prompt: "Summarise the release notes".to_owned(),
        tokens: Some(2000),
        interval_ms: Some(60),
    };
    let agent = run.validate().expect("valid bounds");
    let elsewhere = server
        .agents()
        .run(demo, agent.task())
        .expect("demo is idle");
    wait_for_text(browser, "#agent-demo .status", |text| {
        text == format!("running {}", elsewhere.run_id())
    })
    .await?;
    wait_for_text(browser, "#agent-demo .reply", |text| text.len() > 20).await?;

    // Start a run with the form's Run button.
    fill(browser, "key", "support-42").await?;
    fill(browser, "prompt", "Why is my build slow?").await?;
    fill(browser, "tokens", "2000").await?;
    fill(browser, "interval", "40").await?;
    browser.find(Locator::Id("run")).await?.click().await?;

    // The card appears, the run is on, and tokens arrive.
    let status = wait_for_text(browser, "#agent-support-42 .status", |text| {
        text.starts_with("running run#")
    })
    .await?;
    wait_for_text(browser, "#agent-support-42 .reply", |text| {
        text.split_whitespace().count() >= 8
    })
    .await?;
    wait_for_text(browser, "#agent-support-42 .link", |text| text == "live").await?;
    wait_for_text(browser, "#log", |text| {
        text.contains(&format!(
            "support-42: started {}",
            &status["running ".len()..]
        ))
    })
    .await?;

    // Stop it with the card's Stop button: the page shows the stopped state and the reason.
    browser
        .find(Locator::Css("#agent-support-42 .stop"))
        .await?
        .click()
        .await?;
    wait_for_text(browser, "#agent-support-42 .status", |text| text == "idle").await?;
    wait_for_text(browser, "#agent-support-42 .outcome", |text| {
        text == format!("stopped: {PAGE_STOP_REASON}")
    })
    .await?;
    // The reply stays as far as it got.
    let reply = wait_for_text(browser, "#agent-support-42 .reply", |text| {
        text.starts_with("You asked: “Why is my build slow?”.")
    })
    .await?;
    // The server agrees (the page's event stream keeps the key remembered).
    let key = AgentKey::parse("support-42").expect("a valid key");
    let state = server.agents().state(&key);
    assert!(state.is_idle(), "{state:?}");
    assert_eq!(
        state.last_outcome(),
        Some(&Outcome::Stopped {
            reason: Some(Reason::from(PAGE_STOP_REASON)),
        })
    );
    println!("reply when stopped: {reply}");
    // The page lists what runs and what the repository remembers (both keys: the page
    // watches them).
    wait_for_text(browser, "#running button", |text| text == "demo").await?;
    wait_for_text(browser, "#stats", |text| {
        text.starts_with("1 running · 2 keys remembered")
    })
    .await?;

    let screenshot = browser.screenshot().await?;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-dashboard.png");
    fs::write(&path, screenshot).expect("write the screenshot");
    println!("screenshot: {}", path.display());

    // Shutting the server down stops the run started elsewhere with a reason; the page gets
    // that final state before its event streams end.
    server.shut_down_within(Duration::from_secs(5)).await;
    wait_for_text(browser, "#agent-demo .outcome", |text| {
        text == format!("stopped: {SHUTDOWN_REASON}")
    })
    .await?;
    wait_for_text(browser, "#agent-demo .link", |text| text == "reconnecting…").await?;
    Ok(())
}

/// Replaces the text of the input with id `id`.
async fn fill(browser: &Client, id: &str, text: &str) -> Result<(), CmdError> {
    let input = browser.find(Locator::Id(id)).await?;
    input.clear().await?;
    input.send_keys(text).await
}

/// Polls the text of the element `css` until `done` holds; fails after [`DEADLINE`] showing
/// the last text seen.
async fn wait_for_text(
    browser: &Client,
    css: &str,
    done: impl Fn(&str) -> bool,
) -> Result<String, CmdError> {
    let started = Instant::now();
    let mut last = None;
    loop {
        match browser.find(Locator::Css(css)).await {
            Ok(element) => {
                let text = element.text().await?;
                if done(&text) {
                    return Ok(text);
                }
                last = Some(text);
            }
            Err(error) if error.is_no_such_element() => {}
            Err(error) => return Err(error),
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{css}: still {last:?} after {DEADLINE:?}"
        );
        // A watchdog poll, not an ordering: the condition is checked again until the deadline.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `chromedriver`, in a process group of its own, with a browser profile directory
/// of its own. Dropping it kills the whole group (the browser too) and removes the profile.
struct Chromedriver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// If chromedriver cannot be started or does not listen within [`DEADLINE`].
    fn start() -> Self {
        let program = env::var_os("CHROMEDRIVER").unwrap_or_else(|| OsString::from("chromedriver"));
        let port = free_port();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("web-browser-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create the browser's directory");
        let log = dir.join("chromedriver.log");
        let spawned = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&program)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
        };
        let child = spawned.unwrap_or_else(|error| {
            let _ = fs::remove_dir_all(&dir);
            panic!(
                "cannot start {} ({error}): a real browser is required. Install Debian's \
                 `chromium` and `chromium-driver` (`cargo xtask test` does, as root), or name \
                 the driver with CHROMEDRIVER",
                program.to_string_lossy()
            )
        });
        let mut driver = Self { child, port, dir };
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before listening:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < DEADLINE,
                "chromedriver did not listen on port {port} within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        driver
    }

    /// A WebDriver session on a headless browser with a profile of its own.
    async fn connect(&self) -> Client {
        let mut options = json!({
            "args": [
                "--headless=new",
                // Root (as on CI) cannot start the browser inside its sandbox.
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--window-size=1024,768",
                format!("--user-data-dir={}", self.dir.join("profile").display()),
            ],
        });
        if let Some(binary) = env::var_os("CHROME") {
            options["binary"] = json!(binary.to_string_lossy());
        }
        let mut capabilities = Capabilities::new();
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let url = format!("http://127.0.0.1:{}", self.port);
        match tokio::time::timeout(DEADLINE, builder.connect(&url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => panic!(
                "cannot start a browser session: {error}\n{}",
                fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default()
            ),
            Err(_) => panic!("no browser session within {DEADLINE:?}"),
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // Killing chromedriver alone would leave the browser running: kill the whole group.
        // (std has no call for a process group, and this crate forbids `unsafe`; the shell's
        // `kill` builtin takes a negative id as a group.)
        let group = format!("-{}", self.child.id());
        let _ = Command::new("sh")
            .args(["-c", "kill -s KILL -- \"$0\"", &group])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}
