//! The `web` example's page in a real browser: load it, start a run with the Run button, see
//! the tokens arrive, lose the network and see the reply resume where it left off, stop the
//! run with the Stop button, see the stopped state and its reason.
//!
//! The browser is Debian's `chromium`, headless, driven over WebDriver by `chromedriver`
//! (`cargo xtask test` installs both when missing, as root). Without them this test fails; it
//! never skips. `CHROMEDRIVER` names another driver binary, `CHROME` another browser binary.
//!
//! Every wait has a deadline, each naming what it waited for; the WebDriver session is closed
//! even when an assertion fails, and chromedriver's whole process group (the browser included)
//! is killed when the test ends. A screenshot of the page is written to
//! `target/tmp/web-dashboard.png` (the one in `docs/img` comes from there).

#[path = "../examples/web/agent.rs"]
mod agent;
#[path = "../examples/web/app.rs"]
mod app;
mod web_support;

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs};

use fantoccini::error::{CmdError, NewSessionError};
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use keyrunner::{Outcome, Reason};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;

use crate::agent::{RunRequest, reply_tokens};
use crate::app::{AgentKey, SHUTDOWN_REASON};
use crate::web_support::Server;

/// The longest one wait for the page may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// The longest chromedriver may take to listen on its port (it takes about 50 ms).
const DRIVER_START: Duration = Duration::from_secs(10);

/// The longest the browser may take to start, as chromedriver counts it (its
/// `browserStartupTimeout`, 60 s by default). About one second on an idle machine; a cold start
/// on a loaded one takes several.
const BROWSER_START: Duration = Duration::from_secs(30);

/// The longest one request for a session may take: the browser's start, and chromedriver's own
/// work around it. Past this, chromedriver has neither answered nor reported its own timeout.
const SESSION_DEADLINE: Duration = Duration::from_secs(45);

/// Attempts at a session. A browser that does not start within [`BROWSER_START`] gets one more
/// try, with a fresh profile: a cold start on a loaded machine is the one step known to be that
/// slow. Any other failure fails the test at once.
const SESSION_ATTEMPTS: u32 = 2;

/// The longest the whole test may take.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// The reason the page's Stop button gives.
const PAGE_STOP_REASON: &str = "stopped from the dashboard";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_and_stops_an_agent_in_a_real_browser() {
    let server = Server::start().await;
    let network = Network::start(server.addr()).await;
    let driver = Chromedriver::start();
    let browser = driver.session().await;

    let outcome = tokio::time::timeout(
        TEST_DEADLINE,
        AssertUnwindSafe(drive_the_dashboard(&browser, server, &network)).catch_unwind(),
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

async fn drive_the_dashboard(
    browser: &Client,
    server: Server,
    network: &Network,
) -> Result<(), CmdError> {
    browser
        .update_timeouts(TimeoutConfiguration::new(
            Some(DEADLINE),
            Some(DEADLINE),
            Some(Duration::ZERO),
        ))
        .await?;
    // The browser reaches the server through the network stand-in, which can drop connections.
    browser.goto(&network.url("/")).await?;

    // The page watches the key in its form ("demo") from the start: a run started elsewhere
    // shows up there live.
    let demo = AgentKey::parse("demo").expect("a valid key");
    let prompt = "Summarise the release notes";
    let run = RunRequest {
        prompt: prompt.to_owned(),
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
    wait_for_text(browser, "#agent-demo .link", |text| text == "live").await?;
    let before = wait_for_text(browser, "#agent-demo .reply", |text| text.len() > 20).await?;

    // The network drops every connection. The browser reconnects the event stream by itself,
    // sending the id of the last event it got, and the reply goes on from there: at every
    // moment the page shows a beginning of the full reply, with no token repeated or missing.
    let full: String = reply_tokens(prompt, 2000).collect();
    network.cut();
    wait_for_text(browser, "#agent-demo .link", |text| {
        text == "live (resumed)"
    })
    .await?;
    let resumed = wait_for_text(browser, "#agent-demo .reply", |text| {
        assert!(
            full.starts_with(text),
            "not a beginning of the reply: {text:?}"
        );
        text.split_whitespace().count() >= before.split_whitespace().count() + 5
    })
    .await?;
    println!("reply before the network dropped: {before}\nafter: {resumed}");
    // The browser did resume: it sent the id of the last event it had got.
    let requests = network.requests("GET /agents/demo/events ");
    assert!(
        requests
            .iter()
            .any(|head| { head.to_ascii_lowercase().contains("\r\nlast-event-id: ") }),
        "no Last-Event-ID in {requests:#?}"
    );

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
    /// Starts chromedriver on a port of its choosing and waits until it listens.
    ///
    /// chromedriver picks the port itself (`--port=0`) and says which one once it listens: no
    /// other process (another test run on the same machine) can take the port in between.
    ///
    /// # Panics
    ///
    /// If chromedriver cannot be started, exits, or does not listen within [`DRIVER_START`].
    fn start() -> Self {
        let program = env::var_os("CHROMEDRIVER").unwrap_or_else(|| OsString::from("chromedriver"));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("web-browser-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create the browser's directory");
        let started = Instant::now();
        let spawned = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&program)
                .arg("--port=0")
                .arg(format!(
                    "--log-path={}",
                    dir.join("chromedriver.log").display()
                ))
                // Timestamps in the log show where a slow session spent its time.
                .arg("--readable-timestamp")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
        };
        let mut child = spawned.unwrap_or_else(|error| {
            let _ = fs::remove_dir_all(&dir);
            panic!(
                "cannot start {} ({error}): a real browser is required. Install Debian's \
                 `chromium` and `chromium-driver` (`cargo xtask test` does, as root), or name \
                 the driver with CHROMEDRIVER",
                program.to_string_lossy()
            )
        });
        let listening = listening_port(child.stdout.take().expect("a piped stdout"));
        let mut driver = Self {
            child,
            port: 0,
            dir,
        };
        driver.port = match listening.recv_timeout(DRIVER_START) {
            Ok(Some(port)) => port,
            Ok(None) => panic!(
                "chromedriver said it listens, but not on which port (a version older than \
                 Debian 12's?)\n{}",
                driver.log()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "chromedriver exited ({}) before listening\n{}",
                driver
                    .child
                    .wait()
                    .map_or_else(|error| error.to_string(), |status| status.to_string()),
                driver.log()
            ),
            Err(RecvTimeoutError::Timeout) => panic!(
                "chromedriver did not listen within {DRIVER_START:?}\n{}",
                driver.log()
            ),
        };
        println!(
            "chromedriver listening on port {} after {:?}",
            driver.port,
            started.elapsed()
        );
        driver
    }

    /// A WebDriver session on a headless browser with a fresh profile.
    ///
    /// # Panics
    ///
    /// If no session is made within [`SESSION_ATTEMPTS`] attempts of at most
    /// [`SESSION_DEADLINE`] each; the message says which step failed and shows chromedriver's
    /// log.
    async fn session(&self) -> Client {
        let url = format!("http://127.0.0.1:{}", self.port);
        for attempt in 1..=SESSION_ATTEMPTS {
            let started = Instant::now();
            let mut builder = ClientBuilder::new(HttpConnector::new());
            builder.capabilities(self.capabilities(attempt));
            let error = match tokio::time::timeout(SESSION_DEADLINE, builder.connect(&url)).await {
                Ok(Ok(client)) => {
                    println!(
                        "browser session after {:?} (attempt {attempt})",
                        started.elapsed()
                    );
                    return client;
                }
                Ok(Err(error)) => error,
                Err(_) => panic!(
                    "chromedriver answered a session request neither with a session nor with an \
                     error within {SESSION_DEADLINE:?} (attempt {attempt}; the browser's own \
                     start is bounded by {BROWSER_START:?})\n{}",
                    self.log()
                ),
            };
            if attempt < SESSION_ATTEMPTS && browser_start_timed_out(&error) {
                println!(
                    "the browser did not start within {BROWSER_START:?} (attempt {attempt}, \
                     after {:?}): {error}; trying once more with a fresh profile",
                    started.elapsed()
                );
                continue;
            }
            panic!(
                "no browser session (attempt {attempt}, after {:?}): {error}\n{}",
                started.elapsed(),
                self.log()
            );
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Headless, with a profile of its own for each attempt, and chromedriver's bound on the
    /// browser's start.
    fn capabilities(&self, attempt: u32) -> Capabilities {
        let profile = self.dir.join(format!("profile-{attempt}"));
        let mut options = json!({
            "args": [
                "--headless=new",
                // Root (as on CI) cannot start the browser inside its sandbox.
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--window-size=1024,768",
                format!("--user-data-dir={}", profile.display()),
            ],
            "browserStartupTimeout": BROWSER_START.as_millis(),
        });
        if let Some(binary) = env::var_os("CHROME") {
            options["binary"] = json!(binary.to_string_lossy());
        }
        let mut capabilities = Capabilities::new();
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        capabilities
    }

    /// chromedriver's log so far, for a failure message.
    fn log(&self) -> String {
        let path = self.dir.join("chromedriver.log");
        match fs::read_to_string(&path) {
            Ok(log) => format!("chromedriver's log ({}):\n{log}", path.display()),
            Err(error) => format!("chromedriver's log ({}): {error}", path.display()),
        }
    }
}

/// Whether chromedriver gave up waiting for the browser to start: it reports that the browser
/// never wrote the file announcing its DevTools port (checked with `browserStartupTimeout` set
/// to 50 ms). A browser that crashed, a driver and browser of different versions, or a missing
/// binary fail otherwise, and are not retried.
fn browser_start_timed_out(error: &NewSessionError) -> bool {
    matches!(
        error,
        NewSessionError::SessionNotCreated(error)
            if error.message.contains("DevToolsActivePort file doesn't exist")
    )
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

/// The network between the browser and the server: a TCP proxy that can drop every connection
/// going through it, as a blip would, and that keeps what the browser sent.
struct Network {
    addr: SocketAddr,
    connections: Arc<Mutex<JoinSet<()>>>,
    /// What the browser sent on each connection, in order.
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Network {
    /// Forwards connections on a port of its own to `server`.
    async fn start(server: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("a bound listener's address");
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let accepting = tokio::spawn({
            let connections = Arc::clone(&connections);
            let sent = Arc::clone(&sent);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let sent = Arc::clone(&sent);
                    lock(&connections).spawn(forward(client, server, sent));
                }
            }
        });
        Self {
            addr,
            connections,
            sent,
            accepting,
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`, through this network.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Drops every connection open through the network; later ones go through.
    fn cut(&self) {
        lock(&self.connections).abort_all();
    }

    /// The heads (request line and headers) of the requests the browser sent whose request
    /// line starts with `start`, say `GET /path `.
    fn requests(&self, start: &str) -> Vec<String> {
        let mut heads = Vec::new();
        for sent in lock(&self.sent).iter() {
            let sent = String::from_utf8_lossy(sent);
            for (at, _) in sent.match_indices(start) {
                let head = &sent[at..];
                heads.push(head[..head.find("\r\n\r\n").unwrap_or(head.len())].to_owned());
            }
        }
        heads
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

/// Forwards `client` to `server` until either side is done, keeping what the client sends.
async fn forward(
    client: tokio::net::TcpStream,
    server: SocketAddr,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let Ok(upstream) = tokio::net::TcpStream::connect(server).await else {
        return;
    };
    let index = {
        let mut sent = lock(&sent);
        sent.push(Vec::new());
        sent.len() - 1
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = upstream.into_split();
    let requests = async {
        let mut buffer = [0; 4096];
        loop {
            match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    lock(&sent)[index].extend_from_slice(&buffer[..read]);
                    if to_server.write_all(&buffer[..read]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let responses = tokio::io::copy(&mut from_server, &mut to_client);
    tokio::select! {
        () = requests => {}
        _ = responses => {}
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The port chromedriver announces on `stdout` once it listens ("ChromeDriver was started
/// successfully on port 45453."), read on a thread of its own, which goes on draining `stdout`
/// until chromedriver exits. `None` if the line names no port; the channel closes if
/// chromedriver exits first.
fn listening_port(stdout: ChildStdout) -> mpsc::Receiver<Option<u16>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.starts_with("ChromeDriver was started successfully") {
                let port = line
                    .trim_end_matches('.')
                    .rsplit_once(" on port ")
                    .and_then(|(_, port)| port.parse().ok());
                // The test may have given up waiting already.
                let _ = sender.send(port);
            }
        }
    });
    receiver
}
