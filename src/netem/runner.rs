//! Running commands: the [`CommandRunner`] seam between pure command generation and the
//! kernel. [`SystemRunner`] runs the real programs (no shell, bounded time, output captured);
//! [`Recorder`] records what would run (golden tests, fault injection) or wraps a real runner.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::commands::TcCommand;
use super::error::NetemError;

/// What a finished command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    pub success: bool,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn ok(stdout: impl Into<String>) -> CmdOutput {
        CmdOutput {
            success: true,
            code: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    pub fn failed(code: i32, stderr: impl Into<String>) -> CmdOutput {
        CmdOutput {
            success: false,
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }
}

/// Why a command could not be run at all.
#[derive(Debug)]
pub enum RunFailure {
    /// The program is not installed.
    NotFound {
        program: String,
    },
    /// It ran past the runner's limit and was killed.
    TimedOut {
        after: Duration,
    },
    Io(std::io::Error),
}

/// Runs a [`TcCommand`] somewhere: on this host, in a network namespace, or nowhere (recorder).
pub trait CommandRunner: Send + Sync {
    fn run(&self, cmd: &TcCommand) -> Result<CmdOutput, RunFailure>;

    /// `Ok` when commands run by this runner may change traffic control; `Err(why not)`.
    fn permission(&self) -> Result<(), String> {
        process_permission()
    }

    /// Which network namespace the commands act in, as a name for the per-interface lock
    /// (`None`: nothing real is touched, no lock needed).
    fn lock_scope(&self) -> Option<String> {
        Some(netns_scope("/proc/self/ns/net"))
    }

    /// Where a userspace packet queue for these commands' rules must be opened.
    fn queue_home(&self) -> QueueHome {
        QueueHome::Here
    }
}

/// The network namespace a userspace shaper must bind its NFQUEUE in: the one the commands act
/// in (a netlink socket belongs to the namespace it was opened in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueHome {
    /// This process's namespace.
    Here,
    /// A named namespace (`/run/netns/NAME`).
    Netns(String),
    /// No kernel (a recorder): no queue is opened.
    Nowhere,
}

impl<R: CommandRunner + ?Sized> CommandRunner for Box<R> {
    fn run(&self, cmd: &TcCommand) -> Result<CmdOutput, RunFailure> {
        (**self).run(cmd)
    }
    fn permission(&self) -> Result<(), String> {
        (**self).permission()
    }
    fn lock_scope(&self) -> Option<String> {
        (**self).lock_scope()
    }
    fn queue_home(&self) -> QueueHome {
        (**self).queue_home()
    }
}

/// A network namespace named by its inode (the same namespace reads the same through
/// `/proc/self/ns/net` and `/run/netns/NAME`).
fn netns_scope(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| format!("net{}", m.ino()))
        .unwrap_or_else(|_| "host".into())
}

/// CAP_NET_ADMIN's bit in the capability sets.
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process may change traffic control: the capability must be effective, and must
/// survive exec into `tc` (root keeps it; others need it ambient).
pub fn process_permission() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let root = nix::unistd::geteuid().is_root();
    permission_from_status(&status, root)
}

/// The decision of [`process_permission`] for a given `/proc/self/status` text.
pub fn permission_from_status(status: &str, euid_root: bool) -> Result<(), String> {
    let caps = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    let has = |set: Option<u64>| set.is_some_and(|v| v & (1 << CAP_NET_ADMIN) != 0);
    let eff = has(caps("CapEff:"));
    let amb = has(caps("CapAmb:"));
    match (euid_root, eff, amb) {
        (true, true, _) | (false, true, true) => Ok(()),
        (true, false, _) => {
            Err("running as root but without CAP_NET_ADMIN (a restricted container?)".into())
        }
        (false, true, false) => {
            Err("not root, and CAP_NET_ADMIN is not ambient, so `tc` would not inherit it".into())
        }
        (false, false, _) => Err("not root and no CAP_NET_ADMIN".into()),
    }
}

/// Runs the real programs, optionally under a prefix such as `ip netns exec NS`.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    prefix: Vec<String>,
    timeout: Duration,
    /// Program name → path overrides (tests point `tc` at a missing file).
    programs: Vec<(String, String)>,
}

impl Default for SystemRunner {
    fn default() -> Self {
        SystemRunner::new()
    }
}

impl SystemRunner {
    /// `tc`/`ip` from `PATH`, each limited to 10 s (they normally take milliseconds).
    pub fn new() -> SystemRunner {
        SystemRunner {
            prefix: Vec::new(),
            timeout: Duration::from_secs(10),
            programs: Vec::new(),
        }
    }

    /// Run every command inside the named network namespace (`ip netns exec NS …`).
    pub fn in_netns(ns: &str) -> SystemRunner {
        SystemRunner::new().with_prefix(&["ip", "netns", "exec", ns])
    }

    /// Run every command behind `prefix` (e.g. `setpriv … ` to drop privileges in a test).
    pub fn with_prefix(mut self, prefix: &[&str]) -> SystemRunner {
        self.prefix.extend(prefix.iter().map(|s| s.to_string()));
        self
    }

    pub fn with_timeout(mut self, t: Duration) -> SystemRunner {
        self.timeout = t;
        self
    }

    /// Use `path` whenever a command names `program`.
    pub fn with_program(mut self, program: &str, path: &str) -> SystemRunner {
        self.programs.push((program.into(), path.into()));
        self
    }

    fn resolve<'a>(&'a self, program: &'a str) -> &'a str {
        self.programs
            .iter()
            .find(|(p, _)| p == program)
            .map(|(_, path)| path.as_str())
            .unwrap_or(program)
    }
}

impl CommandRunner for SystemRunner {
    fn queue_home(&self) -> QueueHome {
        let p: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["ip", "netns", "exec", ns, ..] => QueueHome::Netns(ns.to_string()),
            _ => QueueHome::Here,
        }
    }

    fn lock_scope(&self) -> Option<String> {
        let p: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        Some(match p.as_slice() {
            ["ip", "netns", "exec", ns, ..] => netns_scope(&format!("/run/netns/{ns}")),
            _ => netns_scope("/proc/self/ns/net"),
        })
    }

    fn run(&self, cmd: &TcCommand) -> Result<CmdOutput, RunFailure> {
        let target = self.resolve(&cmd.program).to_string();
        let mut argv: Vec<String> = self.prefix.clone();
        argv.push(target.clone());
        argv.extend(cmd.args.iter().cloned());
        tracing::debug!(command = %cmd, "running");
        let mut child = match Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RunFailure::NotFound {
                    program: argv[0].clone(),
                });
            }
            Err(e) => return Err(RunFailure::Io(e)),
        };
        // Read both pipes on threads so a chatty command cannot block on a full pipe while we
        // wait for it.
        let out_t = drain(child.stdout.take());
        let err_t = drain(child.stderr.take());
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RunFailure::TimedOut {
                        after: self.timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(RunFailure::Io(e)),
            }
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        // With a prefix (`ip netns exec`), a missing program shows up as exit 255 + message.
        if !self.prefix.is_empty()
            && !status.success()
            && stderr.contains("No such file or directory")
            && stderr.contains(&target)
        {
            return Err(RunFailure::NotFound { program: target });
        }
        Ok(CmdOutput {
            success: status.success(),
            code: status.code(),
            stdout,
            stderr,
        })
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

type Responder = dyn Fn(&TcCommand) -> CmdOutput + Send + Sync;

struct RecorderInner {
    log: Mutex<Vec<TcCommand>>,
    forward: Option<Box<dyn CommandRunner>>,
    respond: Option<Box<Responder>>,
}

/// Records every command. Without anything to forward to it answers each command with the
/// responder's output (default: success, empty output), which is how golden tests and fault
/// injection drive the shaper; [`Recorder::wrap`] forwards to a real runner and records what
/// actually ran. Clones share one log.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            inner: Arc::new(RecorderInner {
                log: Mutex::new(Vec::new()),
                forward: None,
                respond: None,
            }),
        }
    }

    /// Answer each command with `f(command)`.
    pub fn responding(f: impl Fn(&TcCommand) -> CmdOutput + Send + Sync + 'static) -> Recorder {
        Recorder {
            inner: Arc::new(RecorderInner {
                log: Mutex::new(Vec::new()),
                forward: None,
                respond: Some(Box::new(f)),
            }),
        }
    }

    /// Forward to `inner` and record.
    pub fn wrap(inner: impl CommandRunner + 'static) -> Recorder {
        Recorder {
            inner: Arc::new(RecorderInner {
                log: Mutex::new(Vec::new()),
                forward: Some(Box::new(inner)),
                respond: None,
            }),
        }
    }

    /// Every command so far.
    pub fn commands(&self) -> Vec<TcCommand> {
        self.inner.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The commands that change state (reads such as `tc … show` left out).
    pub fn changes(&self) -> Vec<String> {
        self.commands()
            .iter()
            .filter(|c| !c.is_read_only())
            .map(ToString::to_string)
            .collect()
    }

    pub fn clear(&self) {
        if let Ok(mut l) = self.inner.log.lock() {
            l.clear();
        }
    }
}

impl CommandRunner for Recorder {
    fn run(&self, cmd: &TcCommand) -> Result<CmdOutput, RunFailure> {
        if let Ok(mut l) = self.inner.log.lock() {
            l.push(cmd.clone());
        }
        if let Some(f) = &self.inner.forward {
            return f.run(cmd);
        }
        Ok(match &self.inner.respond {
            Some(f) => f(cmd),
            None => CmdOutput::ok(""),
        })
    }

    fn permission(&self) -> Result<(), String> {
        match &self.inner.forward {
            Some(f) => f.permission(),
            None => Ok(()),
        }
    }

    fn lock_scope(&self) -> Option<String> {
        self.inner.forward.as_ref().and_then(|f| f.lock_scope())
    }

    fn queue_home(&self) -> QueueHome {
        self.inner
            .forward
            .as_ref()
            .map_or(QueueHome::Nowhere, |f| f.queue_home())
    }
}

/// One line of a command's stderr, as the kernel/tc said it.
fn kernel_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "no error message".into()
    } else {
        lines.join("; ")
    }
}

/// Run `cmd` and turn every way it can fail into a [`NetemError`] that names the command and
/// carries the kernel's message. Warnings on a successful command are logged.
pub fn run_checked(
    runner: &dyn CommandRunner,
    cmd: &TcCommand,
    interface: &str,
) -> Result<CmdOutput, NetemError> {
    let out = runner.run(cmd).map_err(|f| match f {
        RunFailure::NotFound { program } => NetemError::ToolMissing { program },
        RunFailure::TimedOut { after } => NetemError::Timeout {
            command: cmd.to_string(),
            seconds: after.as_secs(),
        },
        RunFailure::Io(source) => NetemError::Spawn {
            command: cmd.to_string(),
            source,
        },
    })?;
    if !out.success {
        return Err(classify(cmd, &out.stderr, interface));
    }
    if !out.stderr.trim().is_empty() {
        tracing::warn!(command = %cmd, "{}", kernel_message(&out.stderr));
    }
    Ok(out)
}

/// Map a failed command's stderr to the error a researcher can act on.
pub fn classify(cmd: &TcCommand, stderr: &str, interface: &str) -> NetemError {
    let message = kernel_message(stderr);
    let lower = message.to_ascii_lowercase();
    let command = cmd.to_string();
    if lower.contains("operation not permitted") {
        return NetemError::NotPermitted {
            interface: interface.into(),
            detail: format!("`{command}` said: {message}"),
        };
    }
    let mentions = |w: &str| cmd.args.iter().any(|a| a == w);
    if mentions("netem")
        && (lower.contains("qdisc kind is unknown") || lower.contains("specified qdisc not found"))
    {
        return NetemError::NetemUnavailable { message };
    }
    if mentions("ifb") && (lower.contains("unknown device type") || lower.contains("not supported"))
    {
        return NetemError::IfbUnavailable { message };
    }
    if lower.contains(&format!(
        "cannot find device \"{}\"",
        interface.to_ascii_lowercase()
    )) || lower.contains(&format!(
        "device \"{}\" does not exist",
        interface.to_ascii_lowercase()
    )) {
        return NetemError::InterfaceMissing(interface.into());
    }
    NetemError::CommandFailed { command, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_rules() {
        let st = |eff: &str, amb: &str| format!("Name:\ttc\nCapEff:\t{eff}\nCapAmb:\t{amb}\n");
        assert!(permission_from_status(&st("000001ffffffffff", "0"), true).is_ok());
        assert!(permission_from_status(&st("0000000000000000", "0"), true).is_err());
        assert!(permission_from_status(&st("0000000000001000", "0000000000001000"), false).is_ok());
        assert!(permission_from_status(&st("0000000000001000", "0"), false).is_err());
        assert!(permission_from_status(&st("0", "0"), false).is_err());
        assert!(permission_from_status("garbage", false).is_err());
    }

    #[test]
    fn classify_kernel_messages() {
        let add = TcCommand::tc(&[
            "qdisc", "add", "dev", "eth0", "parent", "4f41:101", "handle", "101:", "netem",
        ]);
        assert!(matches!(
            classify(&add, "Error: Specified qdisc kind is unknown.\n", "eth0"),
            NetemError::NetemUnavailable { .. }
        ));
        assert!(matches!(
            classify(&add, "RTNETLINK answers: Operation not permitted\n", "eth0"),
            NetemError::NotPermitted { .. }
        ));
        assert!(matches!(
            classify(&add, "Cannot find device \"eth0\"\n", "eth0"),
            NetemError::InterfaceMissing(_)
        ));
        let e = classify(
            &add,
            "RTNETLINK answers: File exists\nWe have an error talking to the kernel\n",
            "eth0",
        );
        assert_eq!(
            e.to_string(),
            "`tc qdisc add dev eth0 parent 4f41:101 handle 101: netem` failed: RTNETLINK answers: File exists; We have an error talking to the kernel"
        );
    }

    #[test]
    fn system_runner_reports_missing_program_and_timeout() {
        let r = SystemRunner::new().with_program("tc", "/nonexistent/oa-run-test/tc");
        match run_checked(&r, &TcCommand::tc(&["-V"]), "lo") {
            Err(NetemError::ToolMissing { program }) => {
                assert_eq!(program, "/nonexistent/oa-run-test/tc")
            }
            other => panic!("expected ToolMissing, got {other:?}"),
        }
        let r = SystemRunner::new()
            .with_program("tc", "sleep")
            .with_timeout(Duration::from_millis(200));
        let t = Instant::now();
        match run_checked(&r, &TcCommand::tc(&["5"]), "lo") {
            Err(NetemError::Timeout { .. }) => {}
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn recorder_records_and_responds() {
        let r = Recorder::responding(|c| {
            if c.args.first().map(String::as_str) == Some("boom") {
                CmdOutput::failed(2, "Error: boom")
            } else {
                CmdOutput::ok("x")
            }
        });
        let r2 = r.clone();
        assert!(run_checked(&r, &TcCommand::tc(&["qdisc", "show"]), "lo").is_ok());
        assert!(run_checked(&r, &TcCommand::tc(&["boom"]), "lo").is_err());
        assert_eq!(r2.commands().len(), 2);
        assert_eq!(r2.changes(), ["tc boom"]);
    }
}
