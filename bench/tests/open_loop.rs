//! The load generator against loopback servers started by the tests: sends follow
//! the schedule whatever the server does, late sends are counted when the generator is
//! held back, latencies include the server's delay and the send lag.

use std::time::{Duration, Instant};

use bench::corpus::{Corpus, Texts};
use bench::loopback::Loopback;
use bench::runner::{
    DEFAULT_LATE_THRESHOLD, DEFAULT_MAX_IN_FLIGHT, Mode, RunConfig, RunResult, run,
};
use bench::schedule::{Spec, generate};
use bench::stats::{ErrorKind, Record};
use bench::targets::Target;

fn target(name: &str, url: String) -> Target {
    Target {
        name: name.into(),
        url,
    }
}

fn constant(rate: f64, duration: Duration) -> Mode {
    let schedule = generate(&Spec::constant(rate, duration)).unwrap();
    Mode::Open { schedule }
}

fn config(targets: Vec<Target>, mode: Mode) -> RunConfig {
    RunConfig {
        targets,
        mode,
        corpus: Corpus::new(&Texts::DEFAULT_MIX, 3).unwrap(),
        timeout: Duration::from_secs(10),
        late_threshold: DEFAULT_LATE_THRESHOLD,
        keep_records: true,
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
    }
}

/// `rate` req/s for `duration` to `server` as the one backend, `k8s`.
async fn constant_to_k8s(server: &Loopback, rate: f64, duration: Duration) -> RunResult {
    run(config(
        vec![target("k8s", server.url())],
        constant(rate, duration),
    ))
    .await
    .unwrap()
}

fn of<'a>(records: &'a [Record], backend: &str) -> Vec<&'a Record> {
    let mut v: Vec<_> = records.iter().filter(|r| r.backend == backend).collect();
    v.sort_by_key(|r| r.i);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_follow_the_schedule_against_a_slow_server() {
    // Each answer takes 300 ms; 50 req/s for 2 s to each of two backends. A closed
    // loop of one would need 30 s; the open loop sends on time and ends in ~2.3 s.
    let delay = Duration::from_millis(300);
    let (a, b) = (
        Loopback::start(delay).await.unwrap(),
        Loopback::start(delay).await.unwrap(),
    );
    let t0 = Instant::now();
    let result = run(config(
        vec![target("lambda", a.url()), target("k8s", b.url())],
        constant(50.0, Duration::from_secs(2)),
    ))
    .await
    .unwrap();
    let wall = t0.elapsed();
    assert!(wall < Duration::from_secs(5), "the run took {wall:?}");
    assert_eq!((a.hits(), b.hits()), (100, 100));

    let lambda = of(&result.records, "lambda");
    let k8s = of(&result.records, "k8s");
    assert_eq!((lambda.len(), k8s.len()), (100, 100));
    for (i, (l, k)) in lambda.iter().zip(&k8s).enumerate() {
        // The same schedule and the same texts for both backends.
        assert_eq!((l.i, k.i), (i, i));
        assert_eq!(l.scheduled_ms, k.scheduled_ms);
        assert!((l.scheduled_ms - i as f64 * 20.0).abs() < 1e-6);
        assert_eq!((l.text_class, l.words), (k.text_class, k.words));
        for r in [l, k] {
            assert_eq!(r.status, Some(200), "{r:?}");
            assert_eq!(r.error, None);
            let lag = r.sent_ms - r.scheduled_ms;
            assert!(
                (0.0..100.0).contains(&lag),
                "request {i} left {lag} ms late"
            );
            assert!(r.latency_ms >= 299.0, "{r:?}");
            assert!(r.latency_ms >= r.service_ms);
            assert_eq!(r.server_total_ms, Some(300.0));
        }
    }
    for name in ["lambda", "k8s"] {
        let s = result.stats[name].summary();
        assert_eq!(s.requests, 100);
        // Most sends on time to the millisecond; none far off (the machine is noisy,
        // and the assertion on each request above bounds the worst).
        assert!(s.send_lag_ms.p50 < 10.0, "{name}: {:?}", s.send_lag_ms);
        eprintln!(
            "{name}: {} late sends (> 2 ms), lag {:?}",
            s.late_sends, s.send_lag_ms
        );
        assert!(
            s.latency_ms.p50 >= 299.0 && s.latency_ms.p50 < 1000.0,
            "{:?}",
            s.latency_ms
        );
        assert!((s.offered_rps - 50.0).abs() < 2.0, "{}", s.offered_rps);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn late_sends_are_counted_when_the_generator_is_held_back() {
    // One thread, and a task that blocks it from 200 to 500 ms: the requests due in
    // that window leave late, and their latency includes the wait.
    let server = Loopback::start(Duration::ZERO).await.unwrap();
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::thread::sleep(Duration::from_millis(300));
    });
    let result = constant_to_k8s(&server, 100.0, Duration::from_secs(1)).await;
    let s = result.stats["k8s"].summary();
    assert_eq!(s.requests, 100);
    assert!(s.late_sends >= 20, "only {} late sends", s.late_sends);
    assert!(s.send_lag_ms.max >= 200.0, "{:?}", s.send_lag_ms);
    for r in &result.records {
        let lag = r.sent_ms - r.scheduled_ms;
        assert!(r.latency_ms >= lag, "{r:?}");
    }
    assert!(s.latency_ms.max >= 200.0, "{:?}", s.latency_ms);
}

#[tokio::test(flavor = "current_thread")]
async fn on_one_thread_the_dispatcher_leaves_room_for_the_workers() {
    // 2,000 req/s: the next send is always under the timer lead away, so the
    // dispatcher waits with thread sleeps; the workers share its thread and must still
    // send on time, not once the schedule is over.
    let server = Loopback::start(Duration::ZERO).await.unwrap();
    let result = constant_to_k8s(&server, 2000.0, Duration::from_millis(500)).await;
    let s = result.stats["k8s"].summary();
    assert_eq!((s.requests, s.ok), (1000, 1000));
    // Starved workers would send everything after the last due time: a lag p50 of
    // ~250 ms.
    assert!(s.send_lag_ms.p50 < 20.0, "{:?}", s.send_lag_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_workers_go_back_to_back() {
    // 2 workers, 20 requests of 50 ms each: at least 10 rounds, ~500 ms.
    let server = Loopback::start(Duration::from_millis(50)).await.unwrap();
    let t0 = Instant::now();
    let result = run(config(
        vec![target("router", server.url())],
        Mode::Closed {
            concurrency: 2,
            duration: Duration::from_secs(30),
            max_requests: Some(20),
        },
    ))
    .await
    .unwrap();
    let wall = t0.elapsed();
    assert_eq!(result.records.len(), 20);
    assert_eq!(server.hits(), 20);
    assert!(wall >= Duration::from_millis(490), "{wall:?}");
    assert!(wall < Duration::from_secs(5), "{wall:?}");
    let mut ids: Vec<_> = result.records.iter().map(|r| r.i).collect();
    ids.sort();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_refused_connections_are_classified() {
    let slow = Loopback::start(Duration::from_secs(3)).await.unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = config(
        vec![
            target("k8s", slow.url()),
            target("lambda", format!("http://{closed}")),
        ],
        constant(10.0, Duration::from_millis(300)),
    );
    cfg.timeout = Duration::from_millis(200);
    let result = run(cfg).await.unwrap();
    assert!(
        of(&result.records, "k8s")
            .iter()
            .all(|r| r.error == Some(ErrorKind::Timeout))
    );
    assert!(
        of(&result.records, "lambda")
            .iter()
            .all(|r| r.error == Some(ErrorKind::Connect))
    );
    assert_eq!(
        result.stats["k8s"].summary().errors.get("timeout"),
        Some(&3)
    );
    assert_eq!(
        result.stats["lambda"].summary().errors.get("connect"),
        Some(&3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_shows_as_late_sends_not_lost_latency() {
    // One request in flight at a time, 100 ms each, 20 due per second: from the
    // second on each waits for the one before, leaves late, and its latency counts
    // the wait from its scheduled time.
    let server = Loopback::start(Duration::from_millis(100)).await.unwrap();
    let mut cfg = config(
        vec![target("k8s", server.url())],
        constant(20.0, Duration::from_millis(500)),
    );
    cfg.max_in_flight = 1;
    let result = run(cfg).await.unwrap();
    let s = result.stats["k8s"].summary();
    assert_eq!(s.ok, 10);
    assert!(s.late_sends >= 8, "{} late sends", s.late_sends);
    // The last is due at 450 ms and leaves after nine answers (~900 ms).
    let last = of(&result.records, "k8s").pop().unwrap().clone();
    assert!(last.sent_ms >= 850.0, "{last:?}");
    assert!(
        last.latency_ms >= last.sent_ms - last.scheduled_ms + 99.0,
        "{last:?}"
    );
}
