//! The `bilge` binary: parse, set up tracing, dispatch, map the result to an exit code.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use bilge::cleanup::engine::Standalone;
use bilge::cli::{Cli, Command};
use bilge::config::Config;

/// How long exit waits for blocking threads: a statvfs stuck on a hung mount never returns, and
/// must not keep bilge from exiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Writes `bytes` to stdout; a closed pipe (`| head`) is no error worth a panic.
fn print(bytes: &[u8]) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bilge: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    bilge::memory::limit_arenas();
    let cli = Cli::parse();
    // Generated from the flags themselves, before any setting is read (a bad environment must not
    // keep anyone from getting completions or the man page).
    match &cli.command {
        Command::Completions(a) => {
            let mut out = Vec::new();
            clap_complete::generate(a.shell, &mut Cli::command(), "bilge", &mut out);
            return print(&out);
        }
        Command::Man(a) => {
            let mut root = Cli::command();
            // Built, so that each command's page lists the global flags too.
            root.build();
            let version = root.get_version().unwrap_or_default().to_string();
            let page = match a.command.as_deref() {
                None => root,
                Some(name) => match root.find_subcommand(name) {
                    // Named as man pages of git-style commands are: bilge-serve(1).
                    Some(sub) => sub.clone().name(format!("bilge-{name}")).version(version),
                    None => {
                        eprintln!(
                            "bilge: no command {name:?}; man pages: bilge, and one per command (bilge man serve)"
                        );
                        return ExitCode::from(2);
                    }
                },
            };
            let mut out = Vec::new();
            return match clap_mangen::Man::new(page).render(&mut out) {
                Ok(()) => print(&out),
                Err(e) => {
                    eprintln!("bilge: cannot render the man page: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    // Every TLS endpoint (server, clients) uses rustls with ring; reqwest is built without a
    // provider of its own and asks for the default.
    bilge::web::tls::install_default_provider();
    let log = match Config::log(&cli.global) {
        Ok(l) => l,
        Err(e) => return usage_error(&e),
    };
    bilge::logging::init(&log);
    let cfg = match Config::from_args(&cli.global) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bilge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = match cli.command {
        Command::Serve(args) => match cfg.serve(&args) {
            Ok(serve) => rt.block_on(bilge::serve::run(serve)).map_err(Into::into),
            Err(e) => return usage_error(&e),
        },
        Command::Df(args) => rt
            .block_on(bilge::df::run(
                cfg.docker,
                cfg.filesystem,
                &cfg.policy,
                &cfg.state_path,
                args.json,
                args.footprint,
            ))
            .map_err(Into::into),
        Command::Healthcheck(args) => match Config::healthcheck(&args) {
            Ok(h) => rt.block_on(bilge::healthcheck(h)).map_err(Into::into),
            Err(e) => return usage_error(&e),
        },
        // Answered before the settings were read, above.
        Command::Completions(_) | Command::Man(_) => Ok(()),
        Command::Clean(args) => match Config::clean(&args) {
            Ok(opts) => match rt.block_on(bilge::cleanup::cli::run(standalone(cfg), opts)) {
                Ok(code) => {
                    rt.shutdown_timeout(SHUTDOWN_GRACE);
                    return ExitCode::from(code);
                }
                Err(e) => Err(e.into()),
            },
            Err(e) => return usage_error(&e),
        },
        Command::Build(args) => {
            let build = match cfg.build(&args) {
                Ok(b) => b,
                Err(e) => return usage_error(&e),
            };
            let cleaner = bilge::builds::run::EngineCleaner::new(standalone(cfg));
            let code = match rt.block_on(bilge::builds::run::run(&build, &cleaner)) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("bilge: {e}");
                    ExitCode::FAILURE
                }
            };
            rt.shutdown_timeout(SHUTDOWN_GRACE);
            return code;
        }
    };
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(be) = e.downcast_ref::<bilge::Error>()
                && be.is_usage()
            {
                return usage_error(be);
            }
            eprintln!("bilge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The slice of the settings an engine of its own needs.
fn standalone(cfg: Config) -> Standalone {
    Standalone {
        policy: cfg.policy,
        settings: cfg.engine,
        docker: cfg.docker,
        filesystem: cfg.filesystem,
        state_path: cfg.state_path,
    }
}

fn usage_error(e: &bilge::Error) -> ExitCode {
    eprintln!("bilge: {e}");
    ExitCode::from(2)
}
