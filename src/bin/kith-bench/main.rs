//! kith-bench: kith's speed and memory, and Synapse's beside it on the same machine, from
//! one command. It drives a homeserver over the Client-Server API only:
//!
//! 1. registers and logs in `--users` users (half senders, half receivers) and makes a
//!    direct room (invite + join) for each pair;
//! 2. for `--duration` seconds each sender keeps `--concurrency` sends in flight while each
//!    receiver long-polls `/sync`: messages accepted per second, send latency, delivery
//!    latency (send start → seen in the receiver's sync), undelivered messages, and the
//!    server's CPU time per accepted message;
//! 3. does the same for a third as long with receivers on sliding sync (MSC4186, as
//!    Element X syncs);
//! 4. times an initial `/sync` for a user in `--history-rooms` rooms, first empty, then
//!    with `--history-events` messages in each; then that user's sliding-sync room list as
//!    Element X opens it (rooms 0–19), grows it (0–99) and polls it with nothing new.
//!
//! It also reports startup time (spawn → first `/versions`), idle and peak RSS, and its own
//! CPU use. On two or more CPUs the server is pinned to CPU 0 and the benchmark to CPU 1,
//! so the figures are the server's. `--compare-synapse` runs the same workload against
//! Synapse (from PyPI, installed into a virtualenv if missing) and prints the ratios.
//!
//! `cargo run --release --bin kith-bench -- [--compare-synapse]`; see `BENCHMARKS.md`.

mod big_room;
mod procfs;
mod report;
mod server;
mod sliding;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

use report::{Figures, Percentiles, ms};
use server::Server;
use workload::{Api, User, Via, progress};

#[derive(Debug, Parser)]
#[command(about = "kith's speed and memory (and Synapse's, side by side)")]
struct Args {
    /// Users registered and logged in; half send, half receive, a direct room per pair.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// More users, in no room, each long-polling `/sync` through the load phases: the
    /// many idle clients of a real server, which a message should not wake.
    #[arg(long, default_value_t = 0)]
    idle_users: usize,
    /// Also measure a room of this many members, five of them chatting at 20 messages/s
    /// (0: not measured).
    #[arg(long, default_value_t = 0)]
    big_room: usize,
    /// Also a soak of this many seconds at `--rate` (default 100 messages/s), the
    /// server's RSS sampled at its start, middle and end (0: none).
    #[arg(long, default_value_t = 0)]
    soak: u64,
    /// Sends each sender keeps in flight.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Messages per second, all senders together, instead of full speed (to compare
    /// latency at another server's saturation rate).
    #[arg(long)]
    rate: Option<f64>,
    /// Rooms of the initial-sync user [default: 100, or 20 with --compare-synapse].
    #[arg(long)]
    history_rooms: Option<usize>,
    /// Messages in each of those rooms [default: 1000, or 50 with --compare-synapse].
    #[arg(long)]
    history_events: Option<usize>,
    /// Also run the workload against Synapse and print kith/Synapse ratios.
    #[arg(long)]
    compare_synapse: bool,
    /// Python of a virtualenv with matrix-synapse (default: made from
    /// .ci/synapse-requirements.txt).
    #[arg(long)]
    synapse_python: Option<PathBuf>,
    /// The kith binary (default: the one beside this benchmark, built first).
    #[arg(long)]
    kith: Option<PathBuf>,
    /// Benchmark a server already running at this URL instead (registration open, no
    /// rate limits, direct chats between strangers allowed).
    #[arg(long)]
    url: Option<String>,
    /// That server's PID, for its CPU and memory figures.
    #[arg(long)]
    pid: Option<u32>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
}

/// The CPU the servers run on, when there are two to split (set once, at start).
static SERVER_CPU: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();

fn main() -> Result<(), String> {
    let args = Args::parse();
    workload::LOG_START.get_or_init(Instant::now);
    // The servers it starts on the first CPU allowed, the benchmark on the second; the
    // `cargo build` of kith, if any, runs before, on every CPU.
    let binary = match (&args.url, args.kith.as_deref()) {
        (None, given) => Some(server::kith_binary(given)?),
        (Some(_), _) => None,
    };
    let cpus = procfs::allowed_cpus();
    let server_cpu = match cpus.as_slice() {
        [server, bench, ..] => {
            procfs::pin_to(*bench).map_err(|e| format!("cannot pin to CPU {bench}: {e}"))?;
            Some(*server)
        }
        _ => None,
    };
    SERVER_CPU.get_or_init(|| server_cpu);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run(args, binary))
}

async fn run(args: Args, binary: Option<PathBuf>) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let history = (
        args.history_rooms
            .unwrap_or(if args.compare_synapse { 20 } else { 100 }),
        args.history_events
            .unwrap_or(if args.compare_synapse { 50 } else { 1000 }),
    );
    let mut all = Vec::new();
    match binary {
        // `--url`: a server started by hand.
        None => {
            let url = args.url.as_deref().unwrap_or_default();
            let server = server::external(url, args.pid);
            all.push(measure(&server, &http, &args, history).await?);
        }
        Some(binary) => {
            progress("starting kith");
            let kith = server::start_kith(&binary, &http).await?;
            all.push(measure(&kith, &http, &args, history).await?);
            drop(kith);
            if args.compare_synapse {
                let python = server::synapse_python(args.synapse_python.as_deref())?;
                progress("starting Synapse");
                let synapse = server::start_synapse(&python, &http).await?;
                all.push(measure(&synapse, &http, &args, history).await?);
            }
        }
    }
    let machine = procfs::machine();
    println!();
    println!("machine: {machine}");
    let speed = args.rate.map_or_else(
        || "full speed".to_owned(),
        |r| format!("{r} messages/s in all"),
    );
    println!(
        "workload: {} users, {} direct rooms, {} s of sends ({speed}) with {} in flight per \
         sender, initial sync over {} rooms x {} events",
        args.users,
        args.users / 2,
        args.duration,
        args.concurrency,
        history.0,
        history.1
    );
    for figures in &all {
        println!("{}: {}", figures.server, figures.setup);
    }
    println!();
    print!("{}", report::table(&all));
    let json = serde_json::json!({
        "machine": machine,
        "workload": {
            "users": args.users, "duration_s": args.duration, "in_flight_per_sender": args.concurrency,
            "rate_per_s": args.rate,
            "history_rooms": history.0, "history_events": history.1,
        },
        "servers": all,
    });
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(&args.json, text).map_err(|e| format!("{}: {e}", args.json.display()))?;
    println!("\nwritten to {}", args.json.display());
    Ok(())
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

async fn measure(
    server: &Server,
    http: &reqwest::Client,
    args: &Args,
    (history_rooms, history_events): (usize, usize),
) -> Result<Figures, String> {
    let api = Api::new(http.clone(), &server.base);
    let pid = (server.pid != 0).then_some(server.pid);
    let mut figures = Figures {
        server: server.name.to_owned(),
        setup: server.description.clone(),
        startup_ms: server.startup.map(ms),
        initial_sync_rooms: history_rooms,
        initial_sync_events_per_room: history_events,
        ..Figures::default()
    };
    workload::idle(Duration::from_secs(3)).await;
    figures.idle_rss_mib = pid.and_then(|p| mib(procfs::memory_kib(p, "VmRSS")));

    // Users: registration and login each.
    progress(&format!(
        "{}: registering and logging in {} users",
        server.name, args.users
    ));
    // Names fresh on every run, so an external server can be benchmarked more than once.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000);
    let names: Vec<String> = (0..args.users.max(2))
        .map(|i| format!("b{run}u{i}"))
        .collect();
    let started = Instant::now();
    let users: Vec<User> = workload::each(names, 8, |name| {
        let api = api.clone();
        async move { api.register_and_login(&name).await }
    })
    .await?;
    figures.registrations_and_logins_per_s = users.len() as f64 / started.elapsed().as_secs_f64();

    progress(&format!(
        "{}: making {} direct rooms",
        server.name,
        users.len() / 2
    ));
    let pairs: Vec<(User, User)> = users
        .chunks_exact(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    let pairs: Vec<(User, User, String)> = workload::each(pairs, 8, |(a, b)| {
        let api = api.clone();
        async move {
            let room = api.direct_room(&a, &b).await?;
            Ok((a, b, room))
        }
    })
    .await?;

    let idle_names: Vec<String> = (0..args.idle_users)
        .map(|i| format!("b{run}i{i}"))
        .collect();
    if !idle_names.is_empty() {
        progress(&format!(
            "{}: {} idle users long-polling",
            server.name,
            idle_names.len()
        ));
    }
    let idle = workload::each(idle_names, 8, |name| {
        let api = api.clone();
        async move { api.register_and_login(&name).await }
    })
    .await?;
    let idle_polls = workload::IdlePolls::start(&api, idle).await?;
    figures.idle_long_polls = idle_polls.count();

    progress(&format!("{}: sending for {} s", server.name, args.duration));
    let pace = (
        Duration::from_secs(args.duration),
        args.concurrency,
        args.rate,
    );
    let load = workload::send_and_receive(&api, &pairs, pace, (Via::Sync, pid)).await?;
    figures.load_generator_cpu_s_during_load = load.own_cpu.as_secs_f64();
    figures.load_seconds = load.elapsed.as_secs_f64();
    figures.messages_accepted = load.accepted;
    figures.messages_failed = load.failed;
    figures.messages_per_s = load.accepted as f64 / load.elapsed.as_secs_f64();
    figures.send_latency_ms = Percentiles::of(load.send_latencies);
    figures.delivery_latency_ms = Percentiles::of(load.delivery_latencies);
    figures.undelivered = load.undelivered;
    if let Some(used) = load.server_cpu {
        figures.server_cpu_s_during_load = Some(used.as_secs_f64());
        figures.server_cpu_ms_per_message =
            (load.accepted > 0).then(|| ms(used) / load.accepted as f64);
    }

    // The same, received through sliding sync (a third as long).
    let third = Duration::from_secs((args.duration / 3).max(5));
    progress(&format!(
        "{}: sending for {} s to sliding-sync receivers",
        server.name,
        third.as_secs()
    ));
    let pace = (third, args.concurrency, args.rate);
    let load = workload::send_and_receive(&api, &pairs, pace, (Via::Sliding, pid)).await?;
    figures.sliding_server_cpu_ms_per_message = (load.server_cpu)
        .filter(|_| load.accepted > 0)
        .map(|used| ms(used) / load.accepted as f64);
    figures.sliding_messages_per_s = Some(load.accepted as f64 / load.elapsed.as_secs_f64());
    figures.sliding_delivery_latency_ms = Percentiles::of(load.delivery_latencies);
    figures.sliding_undelivered = Some(load.undelivered);
    drop(idle_polls);

    if args.soak > 0 {
        let soak = Duration::from_secs(args.soak);
        let rate = args.rate.unwrap_or(100.0);
        progress(&format!(
            "{}: soaking for {} s at {rate} messages/s",
            server.name,
            soak.as_secs()
        ));
        let sampler = pid.map(|pid| tokio::spawn(procfs::sample_rss(pid, soak)));
        let pace = (soak, 1, Some(rate));
        let load = workload::send_and_receive(&api, &pairs, pace, (Via::Sync, pid)).await?;
        let samples = match sampler {
            Some(sampler) => sampler.await.map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        figures.soak = Some(report::Soak::of(soak, &load, &samples));
    }

    progress(&format!(
        "{}: initial sync over {history_rooms} rooms, then with {history_events} events each",
        server.name
    ));
    // Two users in as many rooms, empty for one and full for the other: an initial sync
    // should grow with the rooms, not with their history.
    let empty = api.register_and_login(&format!("b{run}empty")).await?;
    workload::fill_history(&api, &empty, history_rooms, 0).await?;
    figures.initial_sync_ms_empty_rooms = Some(ms(api.initial_sync(&empty).await?));
    let full = api.register_and_login(&format!("b{run}full")).await?;
    workload::fill_history(&api, &full, history_rooms, history_events).await?;
    figures.initial_sync_ms_full_rooms = Some(ms(api.initial_sync(&full).await?));
    progress(&format!(
        "{}: the sliding-sync room list of that user",
        server.name
    ));
    let costs = sliding::room_list_costs(&api, &full, pid).await?;
    figures.sliding_room_list_initial_ms = Some(costs.initial_ms);
    figures.sliding_room_list_grown_ms = Some(costs.grown_ms);
    figures.sliding_noop_ms = Some(costs.noop_ms);
    figures.sliding_noop_server_cpu_ms = costs.noop_cpu_ms;
    if args.big_room > 0 {
        let chat = (third, 20.0);
        let name = (server.name, run);
        let big = big_room::measure(&api, name, args.big_room, chat, pid).await?;
        figures.big_room = Some(big);
    }
    figures.peak_rss_mib = pid.and_then(|p| mib(procfs::memory_kib(p, "VmHWM")));
    progress(&format!("{}: done", server.name));
    Ok(figures)
}
