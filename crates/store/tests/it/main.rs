//! The store end to end: write, read back, flush, crash recovery, retention.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::*;
use store::read::{LogFilter, TimeRange, TraceFilter};
use store::{Store, StoreConfig};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![
            ("service.name".into(), service.into()),
            ("deployment.environment".into(), "test".into()),
        ],
        schema_url: String::new(),
    })
}

fn span(trace: u8, id: u8, parent: Option<u8>, start: u64, dur: u64) -> Span {
    Span {
        trace_id: TraceId([trace; 16]),
        span_id: SpanId([id; 8]),
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        trace_state: String::new(),
        name: format!("op-{id}"),
        kind: if parent.is_none() {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        start_unix_nano: start,
        end_unix_nano: start + dur,
        attributes: vec![
            ("http.route".into(), format!("/r/{id}")),
            ("n".into(), id.to_string()),
        ],
        events: vec![SpanEvent {
            time_unix_nano: start + 10,
            name: "ev".into(),
            attributes: vec![("k".into(), "v".into())],
        }],
        links: vec![SpanLink {
            trace_id: TraceId([0xab; 16]),
            span_id: SpanId([0xcd; 8]),
            trace_state: "x=1".into(),
            attributes: vec![("link.kind".into(), "follows".into())],
        }],
        status_code: if id == 3 {
            StatusCode::Error
        } else {
            StatusCode::Unset
        },
        status_message: if id == 3 {
            "boom".into()
        } else {
            String::new()
        },
    }
}

fn spans(service: &str, items: Vec<Span>) -> Batch {
    Batch::Spans(vec![Group {
        resource: resource(service),
        scope: Arc::new(Scope {
            name: "lib".into(),
            version: "1.0".into(),
            ..Scope::default()
        }),
        items,
    }])
}

fn range() -> TimeRange {
    let n = now_ns() as i64;
    TimeRange {
        start_ns: n - 3_600_000_000_000,
        end_ns: n + 60_000_000_000,
    }
}

fn quiet() -> StoreConfig {
    StoreConfig {
        flush_interval: Duration::from_secs(3600),
        ..StoreConfig::default()
    }
}

async fn count(store: &Store, table: &str) -> i64 {
    let r = store
        .sql_json(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .await
        .unwrap();
    r.rows[0][0].as_i64().unwrap()
}

#[tokio::test]
async fn spans_round_trip_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), quiet()).unwrap();
    let t = now_ns() - 1_000_000;
    store
        .write(&spans(
            "checkout",
            vec![
                span(1, 1, None, t, 5_000_000),
                span(1, 3, Some(1), t + 1000, 1_000_000),
            ],
        ))
        .await
        .unwrap();
    let got = store.trace(&"01".repeat(16)).await.unwrap();
    assert_eq!(got.len(), 2);
    let root = &got[0];
    assert_eq!(root.span_id, "01".repeat(8));
    assert_eq!(root.parent_span_id, "");
    assert_eq!(root.kind, "SPAN_KIND_SERVER");
    assert_eq!(root.duration_ns, 5_000_000);
    assert_eq!(root.start_time_unix_nano, t.to_string());
    assert_eq!(root.attributes["http.route"], "/r/1");
    assert_eq!(root.resource["deployment.environment"], "test");
    assert_eq!(root.scope.name, "lib");
    assert_eq!(root.events[0].name, "ev");
    assert_eq!(root.events[0].time_unix_nano, (t + 10).to_string());
    assert_eq!(root.events[0].attributes["k"], "v");
    assert_eq!(root.links[0].trace_id, "ab".repeat(16));
    assert_eq!(root.links[0].attributes["link.kind"], "follows");
    let child = &got[1];
    assert_eq!(child.status_code, "STATUS_CODE_ERROR");
    assert_eq!(child.status_message, "boom");

    let red = store.services(range()).await.unwrap();
    assert_eq!(red.len(), 1);
    assert_eq!(
        (red[0].service.as_str(), red[0].spans, red[0].errors),
        ("checkout", 1, 0)
    );

    let f = TraceFilter {
        attributes: vec![("http.route".into(), "/r/3".into())],
        limit: 10,
        ..TraceFilter::default()
    };
    let found = store.search_traces(&f, range()).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].span_count, 2);
    assert_eq!(found[0].error_count, 1);
    assert_eq!(found[0].root_name, "op-1");
    let none = TraceFilter {
        status: Some("STATUS_CODE_OK".into()),
        limit: 10,
        ..TraceFilter::default()
    };
    assert!(
        store
            .search_traces(&none, range())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A store holding spans 1..=`n` of service `a`, flushed; returns what the flush wrote.
async fn flushed_spans(n: u8) -> (tempfile::TempDir, Store, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), quiet()).unwrap();
    let t = now_ns();
    store
        .write(&spans(
            "a",
            (1..=n).map(|i| span(i, i, None, t, 10)).collect(),
        ))
        .await
        .unwrap();
    let flushed = store.flush().await.unwrap();
    (dir, store, flushed)
}

#[tokio::test]
async fn flush_moves_rows_to_parquet_without_duplicates() {
    let (dir, store, flushed) = flushed_spans(50).await;
    let t = now_ns();
    assert_eq!(flushed, 50);
    assert_eq!(count(&store, "otel_traces").await, 50);
    let files: Vec<_> = walk(&dir.path().join("otel_traces"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with(".parquet"));
    store
        .write(&spans("a", vec![span(99, 99, None, t, 10)]))
        .await
        .unwrap();
    assert_eq!(count(&store, "otel_traces").await, 51);
    // No WAL segment older than the flush is kept.
    let segs = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
    assert!(segs <= 3, "{segs} entries in wal/");
}

#[tokio::test]
async fn span_attribute_values_are_written_plain_and_keys_resources_and_names_with_a_dictionary() {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let (dir, _store, _) = flushed_spans(20).await;
    let files = walk(&dir.path().join("otel_traces"));
    let reader = SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
    let group = reader.metadata().row_group(0);
    let column = |path: &str| {
        group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == path)
            .unwrap_or_else(|| panic!("no column {path}"))
    };
    let dictionary = |path: &str| column(path).dictionary_page_offset().is_some();
    for plain in [
        "SpanAttributes.entries.values",
        "TraceId",
        "SpanId",
        "ParentSpanId",
    ] {
        assert!(!dictionary(plain), "{plain} has a dictionary");
    }
    for coded in [
        "ServiceName",
        "SpanName",
        "ScopeName",
        "ResourceAttributes.entries.keys",
        "ResourceAttributes.entries.values",
        "SpanAttributes.entries.keys",
        "SpanKind",
        "StatusCode",
    ] {
        assert!(dictionary(coded), "{coded} has no dictionary");
    }
    // Statistics where the writer properties ask for them (readers prune by service), not elsewhere.
    assert!(column("ServiceName").statistics().is_some());
    assert!(column("SpanKind").statistics().is_none());
    // Lookups by trace id prune files with its bloom filter.
    assert!(column("TraceId").bloom_filter_offset().is_some());
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn reopen_replays_the_wal_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let t = now_ns();
    {
        let store = Store::open(dir.path(), quiet()).unwrap();
        store
            .write(&spans("a", vec![span(1, 1, None, t, 10)]))
            .await
            .unwrap();
        store
            .write(&spans("a", vec![span(2, 2, None, t, 10)]))
            .await
            .unwrap();
        // Dropped without close: like a crash, nothing flushed.
    }
    let seg = walk(&dir.path().join("wal"))
        .into_iter()
        .find(|p| {
            p.extension().is_some_and(|e| e == "wal") && std::fs::metadata(p).unwrap().len() > 0
        })
        .unwrap();
    // A frame cut short by a crash mid-write.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 0, 9, 9]).unwrap();
    drop(f);
    std::fs::remove_file(dir.path().join("LOCK")).ok();
    let store = Store::open(dir.path(), quiet()).unwrap();
    assert_eq!(count(&store, "otel_traces").await, 2);
    assert_eq!(store.stats().torn_tail_bytes, 11);
    store
        .write(&spans("a", vec![span(3, 3, None, t, 10)]))
        .await
        .unwrap();
    assert_eq!(count(&store, "otel_traces").await, 3);
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _a = Store::open(dir.path(), quiet()).unwrap();
    let err = Store::open(dir.path(), quiet()).err().unwrap();
    assert!(err.to_string().contains("in use by another oxeye"), "{err}");
    // Readers are fine alongside.
    Store::open_read_only(dir.path()).unwrap();
}

#[tokio::test]
async fn retention_by_size_drops_the_oldest_hours() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreConfig {
            retention_bytes: Some(1),
            retention_age: None,
            ..quiet()
        },
    )
    .unwrap();
    let hour = 3_600_000_000_000u64;
    let t = now_ns() - 5 * hour;
    store
        .write(&spans(
            "a",
            vec![span(1, 1, None, t, 10), span(2, 2, None, t + 3 * hour, 10)],
        ))
        .await
        .unwrap();
    store.flush().await.unwrap();
    // Retention runs after each flush, on the flusher thread.
    for _ in 0..50 {
        if count(&store, "otel_traces").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&store, "otel_traces").await, 0);
    assert!(walk(&dir.path().join("otel_traces")).is_empty());
}

#[tokio::test]
async fn logs_filter_by_severity_text_and_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), quiet()).unwrap();
    let t = now_ns();
    let rec = |sev: i32, body: &str, trace: Option<TraceId>| LogRecord {
        time_unix_nano: t,
        observed_time_unix_nano: t,
        severity_number: sev,
        severity_text: String::new(),
        body: body.into(),
        attributes: vec![],
        trace_id: trace,
        span_id: None,
        flags: 0,
        event_name: String::new(),
    };
    store
        .write(&Batch::Logs(vec![Group {
            resource: resource("api"),
            scope: Arc::new(Scope::default()),
            items: vec![
                rec(9, "user logged in", None),
                rec(17, "Payment FAILED 100%", Some(TraceId([0xaa; 16]))),
            ],
        }]))
        .await
        .unwrap();
    let f = |min_severity, text: Option<&str>| LogFilter {
        min_severity,
        text: text.map(String::from),
        limit: 10,
        ..LogFilter::default()
    };
    assert_eq!(
        store.logs(&f(Some(17), None), range()).await.unwrap().len(),
        1
    );
    let hit = store
        .logs(&f(None, Some("failed 100%")), range())
        .await
        .unwrap();
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0].trace_id, "aa".repeat(16));
    assert!(
        store
            .logs(&f(None, Some("_")), range())
            .await
            .unwrap()
            .is_empty(),
        "LIKE wildcards are escaped"
    );
}

#[tokio::test]
async fn every_metric_type_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), quiet()).unwrap();
    let t = now_ns();
    let p = |v: PointValue| MetricPoint {
        attributes: vec![("host".into(), "h1".into())],
        start_time_unix_nano: t - 1000,
        time_unix_nano: t,
        flags: 0,
        value: v,
    };
    let m = |name: &str, v: PointValue| Metric {
        name: name.into(),
        description: "d".into(),
        unit: "1".into(),
        points: vec![p(v)],
    };
    let metrics = vec![
        m("g", PointValue::Gauge(1.5)),
        m(
            "s",
            PointValue::Sum {
                value: 7.0,
                temporality: Temporality::Cumulative,
                monotonic: true,
            },
        ),
        m(
            "h",
            PointValue::Histogram {
                count: 3,
                sum: Some(6.0),
                min: Some(1.0),
                max: Some(3.0),
                bucket_counts: vec![1, 2, 0],
                explicit_bounds: vec![1.0, 5.0],
                temporality: Temporality::Delta,
            },
        ),
        m(
            "e",
            PointValue::ExponentialHistogram {
                count: 4,
                sum: Some(8.0),
                min: None,
                max: None,
                scale: 2,
                zero_count: 1,
                positive_offset: -1,
                positive_bucket_counts: vec![1, 2],
                negative_offset: 0,
                negative_bucket_counts: vec![],
                temporality: Temporality::Cumulative,
            },
        ),
        m(
            "q",
            PointValue::Summary {
                count: 10,
                sum: 20.0,
                quantiles: vec![(0.5, 1.0), (0.99, 4.0)],
            },
        ),
    ];
    store
        .write(&Batch::Metrics(vec![Group {
            resource: resource("svc"),
            scope: Arc::new(Scope::default()),
            items: metrics,
        }]))
        .await
        .unwrap();
    let names = store.metric_names().await.unwrap();
    let kinds: Vec<(&str, &str)> = names
        .iter()
        .map(|m| (m.name.as_str(), m.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("e", "exponential_histogram"),
            ("g", "gauge"),
            ("h", "histogram"),
            ("q", "summary"),
            ("s", "sum")
        ]
    );
    let pt = |name: &str| {
        let store = store.clone();
        let name = name.to_string();
        async move {
            let s = store
                .metric_points(&name, None, &[], Some(range()), true)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(s.series.len(), 1);
            assert_eq!(s.series[0].attributes["host"], "h1");
            s.series[0].points[0].clone()
        }
    };
    assert_eq!(pt("g").await["value"], 1.5);
    let s = pt("s").await;
    assert_eq!(
        (s["value"].as_f64(), s["is_monotonic"].as_bool()),
        (Some(7.0), Some(true))
    );
    let h = pt("h").await;
    assert_eq!(h["bucket_counts"], serde_json::json!([1, 2, 0]));
    assert_eq!(h["explicit_bounds"], serde_json::json!([1.0, 5.0]));
    assert_eq!(h["value"], 2.0);
    let e = pt("e").await;
    assert_eq!(
        (e["scale"].as_i64(), e["positive_offset"].as_i64()),
        (Some(2), Some(-1))
    );
    assert_eq!(e["positive_bucket_counts"], serde_json::json!([1, 2]));
    let q = pt("q").await;
    assert_eq!(
        q["quantiles"],
        serde_json::json!([{"quantile": 0.5, "value": 1.0}, {"quantile": 0.99, "value": 4.0}])
    );
}
