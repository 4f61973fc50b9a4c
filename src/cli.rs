//! Command line (clap). Data goes to stdout, logs and diagnostics to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::error::{Error, exit};
use crate::plan::{self, Plan};
use crate::scenario::{self, Diagnostic, LoadedScenario, Override, ProcessEnv, SecretsMode};

fn exit_code_help() -> String {
    let mut s = String::from("Exit codes:\n");
    for (code, what) in exit::TABLE {
        s.push_str(&format!("  {code:>3}  {what}\n"));
    }
    s
}

#[derive(Debug, Parser)]
#[command(
    name = "oa-run",
    version,
    long_version = crate::build_info::describe(),
    about = "Run a network-latency user study on an OpenArena server, declaratively.",
    // Not `args_conflicts_with_subcommands`: clap then also refuses the global flags before a
    // subcommand (`oa-run -v check …`). The run's own arguments are refused with a
    // subcommand in `dispatch`.
    after_help = exit_code_help(),
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario to run.
    pub scenario: Option<PathBuf>,
    /// Print the plan (every step, the latency matrix, the recording names) and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of the dry run.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Override a scenario field, validated like the file (repeatable): --set matches.repeats=1
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// Replace a root qdisc on the latency interface that oa-run did not create (it is not
    /// restored afterwards; the kernel default comes back).
    #[arg(long)]
    pub force_latency: bool,
    /// Serve the live view (dashboard, feed, metrics, health, abort) on IP:PORT while the study
    /// runs; the same as `--set live.listen=IP:PORT`. Without `live.token` only loopback.
    #[arg(long, value_name = "IP:PORT")]
    pub live: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check scenario files without running anything.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override fields, as for a run.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// Print the scenario JSON Schema (as committed in schemas/).
    Schema {
        /// Print the run manifest's schema instead.
        #[arg(long, conflicts_with = "feed")]
        manifest: bool,
        /// Print the live feed's message schema instead.
        #[arg(long)]
        feed: bool,
    },
    /// Check that every peer the study needs is reachable and usable: the server, every
    /// seat's OBS, latency shaping (exit 69 if not).
    Check {
        scenario: PathBuf,
        /// Override fields, as for a run.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// Go on with a study that stopped (interrupted, failed, or recovered after a crash): a
    /// new run, linked to RUN_DIR's, that skips the matches completed there and plays the
    /// rest of the plan.
    Resume {
        /// The earlier run's directory (holding its manifest.json).
        run_dir: PathBuf,
        /// Resume even though the scenario file changed since (recorded in the manifest).
        #[arg(long)]
        force: bool,
        /// Override fields again (secret overrides of the earlier run must be given again).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// Tabulate finished (or interrupted) runs: one row per player × match with its latency,
    /// recording and status (complete / partial / failed / missing, with the reason).
    Report {
        /// Run directories (or their manifest.json); several are combined, told apart by run_id.
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// text: a summary per run and a table; csv: RFC 4180 for pandas/R; json: per run.
        #[arg(long, value_enum, default_value_t = crate::report::ReportFormat::Text)]
        format: crate::report::ReportFormat,
    },
    /// Print a shell completion script: `oa-run completions bash > /etc/bash_completion.d/oa-run`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `oa-run man > oa-run.1 && man ./oa-run.1`.
    Man,
    /// Clean up after a run whose oa-run died (status `running`, pid dead on this host): stop
    /// the recordings it started on each player's OBS, remove its latency tree, mark it
    /// `crashed`. A run whose oa-run is alive is never touched.
    Recover {
        run_dir: PathBuf,
        /// The scenario that supplies the OBS passwords (default: the one the manifest names).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Overrides for that scenario (default: the ones the run used).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// Remove oa-run's latency tree (root qdisc, ingress redirect, ifb device) from an
    /// interface, e.g. after a crash. Leaves qdiscs oa-run did not create alone.
    NetReset {
        /// The interface (as in `latency.interface`).
        #[arg(long)]
        interface: String,
    },
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            });
        }
    };
    crate::logging::init(cli.verbose, cli.quiet);
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

fn report(e: &Error) {
    let mut err = std::io::stderr().lock();
    match e {
        Error::InvalidScenario(diags) => {
            print_diagnostics(&mut err, diags);
            let _ = writeln!(err, "oa-run: {e}; nothing was started");
        }
        _ => {
            let _ = writeln!(err, "oa-run: error: {e}");
        }
    }
}

fn print_diagnostics(w: &mut impl Write, diags: &[Diagnostic]) {
    for d in diags {
        let _ = writeln!(w, "{d}");
    }
}

fn parse_overrides(sets: &[String]) -> Result<Vec<Override>, Error> {
    sets.iter()
        .map(|s| Override::parse(s).map_err(|m| Error::Usage(format!("--set {m}"))))
        .collect()
}

/// Load a scenario and print its warnings.
pub fn load(path: &Path, sets: &[String], mode: SecretsMode) -> Result<LoadedScenario, Error> {
    let overrides = parse_overrides(sets)?;
    let loaded = scenario::load_file(path, &overrides, &ProcessEnv, mode)?;
    print_diagnostics(&mut std::io::stderr().lock(), &loaded.warnings);
    Ok(loaded)
}

/// Load and compile: what every command that needs a plan does first.
pub fn load_plan(
    path: &Path,
    sets: &[String],
    mode: SecretsMode,
) -> Result<(LoadedScenario, Plan), Error> {
    let loaded = load(path, sets, mode)?;
    let plan = plan::compile(&loaded).map_err(|m| Error::Internal(format!("plan: {m}")))?;
    Ok((loaded, plan))
}

fn dispatch(cli: Cli) -> Result<u8, Error> {
    let r = &cli.run;
    if cli.command.is_some()
        && (r.scenario.is_some() || r.dry_run || !r.sets.is_empty() || r.force_latency)
    {
        return Err(Error::Usage(
            "a run's arguments (a scenario, --dry-run, --set, --force-latency) go without a \
             subcommand; give them after the subcommand if it takes them"
                .into(),
        ));
    }
    match cli.command {
        Some(Command::Schema { manifest, feed }) => {
            let schema = if manifest {
                crate::manifest::manifest_schema().clone()
            } else if feed {
                crate::live::feed::schema()
            } else {
                crate::schema::scenario_schema().clone()
            };
            print!("{}", crate::schema::to_pretty(&schema));
            Ok(exit::OK)
        }
        Some(Command::Validate { files, sets }) => validate(&files, &sets),
        Some(Command::NetReset { interface }) => crate::netem::net_reset_command(&interface),
        Some(Command::Check { scenario, sets }) => check(&scenario, &sets),
        Some(Command::Resume {
            run_dir,
            force,
            sets,
        }) => resume(&run_dir, force, &sets),
        Some(Command::Report { runs, format }) => {
            let manifests = crate::report::load_all(&runs)?;
            write_stdout(&crate::report::render(&manifests, format)?, "the report")?;
            Ok(exit::OK)
        }
        Some(Command::Completions { shell }) => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "oa-run", &mut buf);
            write_stdout(&String::from_utf8_lossy(&buf), "the completions")?;
            Ok(exit::OK)
        }
        Some(Command::Man) => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut buf)
                .map_err(|e| Error::Internal(format!("man page: {e}")))?;
            write_stdout(&String::from_utf8_lossy(&buf), "the man page")?;
            Ok(exit::OK)
        }
        Some(Command::Recover {
            run_dir,
            scenario,
            sets,
        }) => recover(&run_dir, scenario.as_deref(), &sets),
        None => {
            let Some(path) = cli.run.scenario.as_deref() else {
                return Err(Error::Usage(
                    "no scenario given; try `oa-run scenarios/latency-study.yaml --dry-run` or `oa-run --help`".into(),
                ));
            };
            let mode = if cli.run.dry_run {
                SecretsMode::Optional
            } else {
                SecretsMode::Required
            };
            let mut sets = cli.run.sets.clone();
            if let Some(addr) = &cli.run.live {
                sets.push(format!("live.listen={addr}"));
            }
            let (loaded, plan) = load_plan(path, &sets, mode)?;
            if cli.run.dry_run {
                print_plan(&plan, cli.run.format)?;
                return Ok(exit::OK);
            }
            if plan.design.seed_source == crate::plan::design::SeedSource::Drawn {
                // Printed before anything starts, so the seed is known even if the manifest
                // never gets written.
                eprintln!(
                    "design.seed not given: drew {0}; this plan is repeated by --set design.seed={0}",
                    plan.design.seed
                );
            }
            run_study(
                &loaded,
                &plan,
                crate::run::executor::RunOptions {
                    force_latency: cli.run.force_latency,
                    ..test_leaf_options()
                },
            )
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

/// Run the study for real: a tokio runtime, Ctrl-C/SIGTERM handling, the executor; the
/// manifest summary goes to stdout.
fn run_study(
    loaded: &LoadedScenario,
    plan: &Plan,
    opts: crate::run::executor::RunOptions,
) -> Result<u8, Error> {
    runtime()?.block_on(async {
        // The live view's port is taken before anything starts, so a busy one stops here.
        let mut live = match crate::live::LiveConfig::from_scenario(&loaded.scenario)? {
            Some(cfg) => Some(crate::live::LiveServer::bind(cfg).await?),
            None => None,
        };
        let shutdown = crate::run::signals::Shutdown::install()
            .map_err(|e| Error::Internal(format!("cannot handle signals: {e}")))?;
        recover_leftovers(loaded).await;
        if let Some(l) = &live {
            eprintln!("oa-run: live view at {}", l.url());
        }
        let mut opts = opts;
        // The questionnaire's pages are the live view's; validation made sure there is one.
        if let (Some(q), Some(l)) = (&loaded.scenario.questionnaire, live.as_mut()) {
            let public = loaded
                .scenario
                .live
                .as_ref()
                .and_then(|x| x.public_url.as_deref());
            let desk = crate::run::questionnaire::Desk::new(q, &l.public_base(public));
            l.serve_questionnaire(desk.clone());
            opts.questionnaire = Some(desk);
        }
        let outcome = crate::run::executor::execute_with(loaded, plan, &shutdown, opts, |hub| {
            live.as_mut()
                .map(|l| l.start(hub, shutdown.clone()))
                .into_iter()
                .collect()
        })
        .await;
        if let Some(l) = live {
            l.stop().await;
        }
        let outcome = outcome?;
        print!("{}", outcome.summary);
        Ok(outcome.exit_code)
    })
}

/// Before a run: earlier runs under `output.dir` whose oa-run died (SIGKILL, power cut) still
/// say `running` and may have left recordings running and a latency tree: recover them first
/// (their manifests then say `crashed`). Bounded, so a dead OBS cannot hold the new run.
async fn recover_leftovers(loaded: &LoadedScenario) {
    use crate::run::recover::{Outcome, recover_all};
    let s = &loaded.scenario;
    let found = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        recover_all(&s.output.dir, s),
    )
    .await;
    let Ok(found) = found else {
        tracing::warn!(
            "recovering earlier crashed runs took over 60 s; run `oa-run recover RUN_DIR` for each"
        );
        return;
    };
    for (dir, r) in found {
        match r {
            Ok(Outcome::Recovered(rec)) => {
                tracing::warn!(
                    "recovered the crashed run {}: {} recording(s) stopped, {} latency leftover(s) removed{}",
                    dir.display(),
                    rec.stopped.len(),
                    rec.latency_removed.len(),
                    if rec.problems.is_empty() {
                        String::new()
                    } else {
                        format!("; problems: {}", rec.problems.join("; "))
                    }
                );
            }
            Ok(Outcome::Skipped(_)) => {}
            Err(e) => tracing::warn!("could not recover {}: {e}", dir.display()),
        }
    }
}

/// `oa-run resume RUN_DIR`: the earlier run's scenario and overrides, checked against the
/// file as it is now, then the rest of its plan.
fn resume(run_dir: &Path, force: bool, sets: &[String]) -> Result<u8, Error> {
    let previous = crate::run::resume::read_previous(run_dir)?;
    let sets = crate::run::resume::overrides(&previous, sets)?;
    let (loaded, plan) = load_plan(&previous.scenario.path, &sets, SecretsMode::Required)?;
    let point = crate::run::resume::plan_resume(run_dir, &loaded.sha256, force)?;
    run_study(
        &loaded,
        &plan,
        crate::run::executor::RunOptions {
            resume: Some(point),
            ..test_leaf_options()
        },
    )
}

/// Tests only: the real tc tree with pfifo leaves where the kernel has no sch_netem (no delay
/// is applied; the manifest says leaf "pfifo").
fn test_leaf_options() -> crate::run::executor::RunOptions {
    crate::run::executor::RunOptions {
        leaf: if std::env::var_os("OA_RUN_TEST_PFIFO_LEAVES").is_some() {
            crate::netem::LeafKind::Pfifo
        } else {
            crate::netem::LeafKind::Netem
        },
        ..Default::default()
    }
}

/// `oa-run recover RUN_DIR`: see [`crate::run::recover`].
fn recover(run_dir: &Path, scenario: Option<&Path>, sets: &[String]) -> Result<u8, Error> {
    use crate::run::recover::{Outcome, Skip};
    use crate::term::escape;
    let m = crate::manifest::read(&run_dir.join(crate::manifest::MANIFEST_FILE))?;
    let path = scenario.unwrap_or(&m.scenario.path);
    // Overrides of secrets were stored as `***`: only the others are reused.
    let sets: Vec<String> = if sets.is_empty() {
        m.scenario
            .overrides
            .iter()
            .filter(|o| !crate::scenario::load::is_redacted(o))
            .cloned()
            .collect()
    } else {
        sets.to_vec()
    };
    let loaded = load(path, &sets, SecretsMode::Required)?;
    let outcome = runtime()?.block_on(crate::run::recover::recover(run_dir, &loaded.scenario))?;
    let dir = escape(&run_dir.display().to_string()).into_owned();
    match outcome {
        Outcome::Skipped(skip) => {
            println!("{dir}: {skip}");
            Ok(match skip {
                Skip::Finished(_) => exit::OK,
                Skip::Alive(_) | Skip::OtherHost(_) => exit::UNAVAILABLE,
            })
        }
        Outcome::Recovered(r) => {
            println!("{dir}: marked crashed");
            for (player, match_no, path) in &r.stopped {
                let path = path.as_deref().map(escape).unwrap_or_default();
                println!("  stopped the recording of player {player}, match {match_no}: {path}");
            }
            for what in &r.latency_removed {
                println!("  removed {}", escape(what));
            }
            for p in &r.problems {
                println!("  not recovered: {}", escape(p));
            }
            Ok(if r.problems.is_empty() {
                exit::OK
            } else {
                exit::RUN_FAILED
            })
        }
    }
}

/// `oa-run check`: the server row(s), every seat's OBS, the latency rows.
fn check(path: &Path, sets: &[String]) -> Result<u8, Error> {
    let loaded = load(path, sets, SecretsMode::Required)?;
    let s = &loaded.scenario;
    let mut rows = runtime()?.block_on(async {
        let (server, obs) = tokio::join!(crate::arena::check_rows(s), crate::obs::check_rows(s));
        [server, obs].concat()
    });
    rows.extend(crate::netem::check_rows(s));
    print!("{}", crate::check::table(&rows));
    Ok(if rows.iter().all(|r| r.ok) {
        exit::OK
    } else {
        exit::UNAVAILABLE
    })
}

fn write_stdout(text: &str, what: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        // `oa-run report ... | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Io {
            what: format!("cannot write {what} to stdout"),
            source: e,
        }),
    }
}

fn print_plan(plan: &Plan, format: Format) -> Result<(), Error> {
    let text = match format {
        Format::Text => plan::render::text(plan),
        Format::Json => {
            let mut s =
                serde_json::to_string_pretty(plan).map_err(|e| Error::Internal(e.to_string()))?;
            s.push('\n');
            s
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::Io {
            what: "cannot write the plan to stdout".into(),
            source: e,
        })
}

fn validate(files: &[PathBuf], sets: &[String]) -> Result<u8, Error> {
    let mut worst = exit::OK;
    for f in files {
        match load_plan(f, sets, SecretsMode::Optional) {
            Ok((_, plan)) => println!(
                "{}: ok ({})",
                f.display(),
                plan::render::summary_line(&plan)
            ),
            Err(e) => {
                report(&e);
                if worst == exit::OK {
                    worst = e.exit_code();
                }
            }
        }
    }
    Ok(worst)
}
