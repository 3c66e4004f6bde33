//! A scripted benign workload is learned; then a shell child, an unusual outbound port, a read of
//! a watched file and a syscall burst each raise the right alerts, and repeating the benign
//! workload raises none.

use model::security::{Alert, BaselineDeparture, SyscallClass, SyscallCounts};
use sensor::testing::*;
use sensor::{BaselineConfig, Baselines, RuleSet, Sensor, SensorConfig};

const S: u64 = 1_000_000_000;
const APP: u32 = 200;
const APP_EXE: &str = "/srv/app/venv/bin/gunicorn";
const USER: u32 = 1000;

fn config() -> SensorConfig {
    SensorConfig {
        host: HOST.into(),
        baseline: BaselineConfig {
            learning_period_secs: 60,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The web app's workload: cumulative syscall counts and a deterministic jitter.
struct Workload {
    counts: [u64; 14],
    rng: u64,
    next_pid: u32,
}

impl Workload {
    fn new() -> Self {
        Workload {
            counts: [0; 14],
            rng: 7,
            next_pid: 1000,
        }
    }

    fn jitter(&mut self, spread: u64) -> u64 {
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.rng >> 33) % (2 * spread + 1)
    }

    /// One second of normal work starting at `t`: accepts from the office /24 on 8080, queries
    /// the database, every 10 s a gzip child; then the interval's syscall counts.
    fn second(&mut self, sensor: &mut Sensor, t: u64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let client = format!("10.0.1.{}:{}", 10 + (t / S) % 50, 50_000 + (t / S) % 1000);
        alerts.extend(sensor.observe(&as_uid(accept(APP, t + 1, 8080, &client), USER)));
        alerts.extend(sensor.observe(&as_uid(connect(APP, t + 2, "10.0.2.5:5432"), USER)));
        if (t / S).is_multiple_of(10) {
            let pid = self.next_pid;
            self.next_pid += 1;
            alerts.extend(sensor.observe(&exec(pid, APP, t + 3, "/usr/bin/gzip", USER)));
            alerts.extend(sensor.observe(&exit(pid, APP, t + 4)));
        }
        for (class, base, spread) in [
            (SyscallClass::Io, 200, 20),
            (SyscallClass::Network, 50, 10),
            (SyscallClass::Memory, 10, 3),
            (SyscallClass::Wait, 100, 15),
            (SyscallClass::FileOpen, 5, 2),
        ] {
            self.counts[class as usize] += base - spread + self.jitter(spread);
        }
        alerts.extend(self.tick(sensor, t + S));
        alerts
    }

    fn tick(&self, sensor: &mut Sensor, t: u64) -> Vec<Alert> {
        sensor.tick(
            t,
            &[SyscallCounts {
                pid: APP,
                counts: self.counts,
                exited: false,
            }],
        )
    }

    fn run(&mut self, sensor: &mut Sensor, from: u64, to: u64) -> Vec<Alert> {
        (from..to)
            .flat_map(|s| self.second(sensor, s * S))
            .collect()
    }
}

fn names(alerts: &[Alert]) -> Vec<String> {
    let mut v: Vec<String> = alerts.iter().map(|a| a.source.name().to_string()).collect();
    v.sort();
    v
}

/// Starts the app and learns its normal work for 60 s (plus a little, so learning has ended).
fn learned() -> (Sensor, Workload) {
    learned_with(config())
}

fn learned_with(config: SensorConfig) -> (Sensor, Workload) {
    let mut sensor = Sensor::new(config, RuleSet::default_rules());
    let start = owned_by(exec(APP, 1, 0, APP_EXE, USER), USER);
    assert!(sensor.observe(&start).is_empty());
    let mut work = Workload::new();
    assert_eq!(names(&work.run(&mut sensor, 0, 61)), Vec::<String>::new());
    (sensor, work)
}

#[test]
fn benign_work_is_learned_and_raises_nothing_afterwards() {
    let (mut sensor, mut work) = learned();
    let base = sensor
        .baselines()
        .get(APP_EXE)
        .expect("the app has a baseline");
    assert!(base.learned_unix_nano.is_some(), "learning ended");
    assert_eq!(
        base.children.iter().cloned().collect::<Vec<_>>(),
        ["/usr/bin/gzip"]
    );
    let peers: Vec<String> = base.peers.iter().map(ToString::to_string).collect();
    assert_eq!(
        peers,
        ["tcp/5432 to 10.0.2.0/24", "tcp/8080 from 10.0.1.0/24"]
    );
    let io = &base.syscalls[&SyscallClass::Io];
    assert!((180.0..=220.0).contains(&io.median), "{io:?}");
    assert_eq!(base.syscalls[&SyscallClass::Kernel].total, 0);

    let alerts = work.run(&mut sensor, 61, 200);
    assert!(alerts.is_empty(), "{:#?}", alerts);
}

#[test]
fn each_departure_raises_the_right_alerts() {
    let (mut sensor, mut work) = learned();
    let t = 70 * S;

    // A shell started by the app: the starter rule (gunicorn is a web server) and the baseline.
    let alerts = sensor.observe(&exec(300, APP, t, "/bin/sh", USER));
    assert_eq!(names(&alerts), ["new_child", "shell-under-server"]);
    let anomaly = alerts
        .iter()
        .find_map(|a| a.anomaly.as_ref())
        .expect("the anomaly says what was expected");
    assert_eq!(anomaly.expected, "children: [/usr/bin/gzip]");
    assert_eq!(anomaly.seen, "/bin/sh");
    assert_eq!(anomaly.score, 1.0);
    assert!(sensor.observe(&exit(300, APP, t + 1)).is_empty());

    // An outbound connection to an unusual port and network.
    let alerts = sensor.observe(&as_uid(connect(APP, t + 2, "203.0.113.9:4444"), USER));
    assert_eq!(names(&alerts), ["new_peer", "outbound-port-not-allowed"]);
    let peer = alerts.iter().find_map(|a| a.anomaly.as_ref()).unwrap();
    assert_eq!(peer.seen, "tcp/4444 to 203.0.113.0/24 (203.0.113.9)");
    assert!(
        peer.expected.contains("tcp/5432 to 10.0.2.0/24"),
        "{}",
        peer.expected
    );

    // A read of /etc/shadow by the app, whose binary a user owns.
    let alerts = sensor.observe(&as_uid(open(APP, t + 3, "/etc/shadow"), USER));
    assert_eq!(names(&alerts), ["credential-read-by-non-root-binary"]);
    assert_eq!(
        alerts[0].summary,
        "/srv/app/venv/bin/gunicorn (owned by uid 1000, run by uid 1000) opened /etc/shadow"
    );

    // A burst of io syscalls in one interval.
    assert!(work.tick(&mut sensor, t + 4 * S).is_empty());
    work.counts[SyscallClass::Io as usize] += 20_000;
    let alerts = work.tick(&mut sensor, t + 5 * S);
    assert_eq!(names(&alerts), ["syscall_burst"]);
    let burst = alerts[0].anomaly.as_ref().unwrap();
    assert!(burst.seen.starts_with("io: 20"), "{}", burst.seen);
    assert!(
        burst.expected.starts_with("io: median"),
        "{}",
        burst.expected
    );
    assert!(burst.score > 0.9);

    // A syscall class the app never used while learning.
    work.counts[SyscallClass::Kernel as usize] += 3;
    let alerts = work.tick(&mut sensor, t + 6 * S);
    assert_eq!(names(&alerts), ["new_syscall_class"]);

    // Back to normal: nothing more, however long it runs.
    let alerts = work.run(&mut sensor, 77, 300);
    assert!(alerts.is_empty(), "{:#?}", alerts);
}

#[test]
fn baselines_persist_across_a_restart_and_reset_per_executable() {
    let (sensor, _) = learned();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baselines.json");
    sensor.baselines().save(&path).unwrap();

    let restarted = |baselines: Baselines| {
        let mut s = Sensor::new(config(), RuleSet::default()).with_baselines(baselines);
        s.observe(&owned_by(exec(APP, 1, 65 * S, APP_EXE, USER), USER));
        s
    };
    let loaded = Baselines::load(config().baseline, &path).unwrap();
    assert_eq!(loaded.get(APP_EXE), sensor.baselines().get(APP_EXE));
    let mut s = restarted(loaded);
    let alerts = s.observe(&exec(301, APP, 70 * S, "/bin/sh", USER));
    assert_eq!(names(&alerts), ["new_child"]);

    // Reset: the app learns again, so a new child is part of what it learns.
    let mut loaded = Baselines::load(config().baseline, &path).unwrap();
    assert!(loaded.reset(APP_EXE));
    assert!(
        loaded.get("/usr/bin/gzip").is_some(),
        "other executables keep theirs"
    );
    let mut s = restarted(loaded);
    assert!(
        s.observe(&exec(302, APP, 70 * S, "/bin/sh", USER))
            .is_empty()
    );
    assert!(
        s.baselines()
            .get(APP_EXE)
            .unwrap()
            .children
            .contains("/bin/sh")
    );

    // A missing file is an empty set; a foreign one is refused with what was expected.
    assert!(
        Baselines::load(BaselineConfig::default(), &dir.path().join("none.json"))
            .unwrap()
            .executables()
            .next()
            .is_none()
    );
    std::fs::write(&path, "{\"version\": 9, \"executables\": {}}").unwrap();
    let err = Baselines::load(BaselineConfig::default(), &path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected baselines as oxeye's JSON (version 1), found version 9"
    );
}

#[test]
fn a_storm_of_alerts_is_merged_and_rate_limited() {
    let mut sensor = Sensor::new(config(), RuleSet::default_rules());
    sensor.observe(&exec(500, 1, 0, "/usr/bin/prober", 0));
    // 10,000 ptrace attaches by one process in 10 s: one alert, then one merged follow-up.
    let mut alerts = Vec::new();
    for i in 0..10_000u64 {
        alerts.extend(sensor.observe(&ptrace_attach(500, i * S / 1000, 7)));
    }
    assert_eq!(alerts.len(), 1);
    alerts.extend(sensor.tick(61 * S, &[]));
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[1].count, 9_999);
    assert_eq!(sensor.limit_stats().merged, 9_999);

    // 10,000 different processes at once: the token bucket lets the burst through, no more.
    let mut storm = 0;
    for pid in 0..10_000u32 {
        storm += sensor.observe(&module_load(10_000 + pid, 62 * S)).len();
    }
    assert_eq!(storm, 50, "the bucket refilled to its burst of 50");
    assert_eq!(sensor.limit_stats().dropped, 10_000 - 50);
    let report = sensor.tick(63 * S, &[]);
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].source.name(), "oxeye.rate_limited");
    assert_eq!(report[0].count, 10_000 - 50);
}

/// The baseline departure each anomaly among `alerts` carries.
fn departures(alerts: &[Alert]) -> Vec<BaselineDeparture> {
    alerts
        .iter()
        .filter_map(|a| a.anomaly.as_ref()?.departure.clone())
        .collect()
}

#[test]
fn accepting_an_anomaly_adds_exactly_what_it_was_about() {
    // Every repeat is its own alert here (no merging), so each check sees what the baseline says.
    let mut config = config();
    config.limits.dedup_window_secs = 0;
    let (mut sensor, mut work) = learned_with(config);
    let before = sensor.baselines().get(APP_EXE).unwrap().clone();
    let t = 70 * S;

    // A new child: accepting it makes that child normal, and only that child.
    let found = departures(&sensor.observe(&exec(401, APP, t, "/bin/sh", USER)));
    assert_eq!(
        found,
        [BaselineDeparture::NewChild {
            exe: APP_EXE.into(),
            child: "/bin/sh".into()
        }]
    );
    assert!(sensor.baselines_mut().accept(&found[0]));
    assert!(departures(&sensor.observe(&exec(402, APP, t + S, "/bin/sh", USER))).is_empty());
    assert_eq!(
        departures(&sensor.observe(&exec(403, APP, t + S, "/usr/bin/curl", USER))).len(),
        1,
        "another child is still new"
    );

    // A new peer: that port and address block become normal; another port there does not.
    let found =
        departures(&sensor.observe(&as_uid(connect(APP, t + 2 * S, "203.0.113.9:4444"), USER)));
    let [BaselineDeparture::NewPeer { peer, .. }] = found.as_slice() else {
        panic!("expected one new peer: {found:?}");
    };
    assert_eq!(peer.to_string(), "tcp/4444 to 203.0.113.0/24");
    assert!(sensor.baselines_mut().accept(&found[0]));
    assert!(
        departures(&sensor.observe(&as_uid(connect(APP, t + 3 * S, "203.0.113.77:4444"), USER)))
            .is_empty(),
        "the same block and port"
    );
    assert_eq!(
        departures(&sensor.observe(&as_uid(connect(APP, t + 3 * S, "203.0.113.9:4445"), USER)))
            .len(),
        1
    );

    // A burst: the range widens to hold that rate, so the same burst passes, a far bigger one
    // does not.
    assert!(work.tick(&mut sensor, t + 4 * S).is_empty());
    work.counts[SyscallClass::Io as usize] += 20_000;
    let found = departures(&work.tick(&mut sensor, t + 5 * S));
    let [BaselineDeparture::SyscallBurst { class, rate, .. }] = found.as_slice() else {
        panic!("expected one burst: {found:?}");
    };
    assert_eq!(*class, SyscallClass::Io);
    assert!(*rate >= 20_000.0, "{rate}");
    assert!(sensor.baselines_mut().accept(&found[0]));
    work.counts[SyscallClass::Io as usize] += 20_000;
    assert!(departures(&work.tick(&mut sensor, t + 6 * S)).is_empty());
    work.counts[SyscallClass::Io as usize] += 400_000;
    assert_eq!(departures(&work.tick(&mut sensor, t + 7 * S)).len(), 1);

    // A new class: that class becomes known at the rate seen; another new class is still new.
    work.counts[SyscallClass::Kernel as usize] += 3;
    let found = departures(&work.tick(&mut sensor, t + 8 * S));
    assert!(
        matches!(
            found.as_slice(),
            [BaselineDeparture::NewSyscallClass {
                class: SyscallClass::Kernel,
                ..
            }]
        ),
        "{found:?}"
    );
    assert!(sensor.baselines_mut().accept(&found[0]));
    work.counts[SyscallClass::Kernel as usize] += 3;
    assert!(departures(&work.tick(&mut sensor, t + 9 * S)).is_empty());
    work.counts[SyscallClass::Debug as usize] += 1;
    assert_eq!(departures(&work.tick(&mut sensor, t + 10 * S)).len(), 1);

    // Nothing else changed: still learned (no new learning period), the old children, peers and
    // rate profiles all kept.
    let after = sensor.baselines().get(APP_EXE).unwrap();
    assert_eq!(after.learned_unix_nano, before.learned_unix_nano);
    assert_eq!(after.first_seen_unix_nano, before.first_seen_unix_nano);
    assert!(before.children.is_subset(&after.children));
    assert_eq!(after.children.len(), before.children.len() + 1);
    assert!(before.peers.is_subset(&after.peers));
    assert_eq!(after.peers.len(), before.peers.len() + 1);
    for class in [
        SyscallClass::Network,
        SyscallClass::Memory,
        SyscallClass::Wait,
    ] {
        assert_eq!(after.syscalls[&class], before.syscalls[&class]);
    }
    let after_json = serde_json::to_string(&found[0]).unwrap();
    assert_eq!(
        serde_json::from_str::<BaselineDeparture>(&after_json).unwrap(),
        found[0],
        "a departure survives the trip through the alerts table"
    );

    // An executable without a baseline cannot accept anything.
    assert!(
        !sensor.baselines_mut().accept(&BaselineDeparture::NewChild {
            exe: "/usr/bin/unknown".into(),
            child: "/bin/sh".into()
        })
    );
}
