//! DataFusion over the store: one table per [`Table`], memory and Parquet files seen as one.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};

use crate::table::Table;
use crate::{Store, StoreError};

fn df_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Query(e.to_string())
}

/// Columns and rows of a query result, values as JSON.
#[derive(Debug, serde::Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

impl Store {
    /// A session that sees a consistent snapshot of memory and files.
    pub(crate) fn session(&self) -> Result<SessionContext, StoreError> {
        // Column names are CamelCase as in ClickHouse; keep unquoted identifiers case-sensitive
        // there too, so the same queries run on both.
        let st = self.shared.read_state();
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
            // Keeps the files of this snapshot on disk for as long as the session lives.
            .with_extension(st.lease.clone());
        let ctx = SessionContext::new_with_config(config);
        let snapshot: Vec<(Table, Vec<RecordBatch>, Vec<String>)> = {
            Table::ALL
                .iter()
                .map(|t| {
                    let mut mem: Vec<RecordBatch> = st.mem.get(t).cloned().unwrap_or_default();
                    mem.extend(st.flushing.get(t).cloned().unwrap_or_default());
                    let files = st
                        .files
                        .get(t)
                        .map(|f| {
                            f.iter()
                                .map(|f| f.path.to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    (*t, mem, files)
                })
                .collect()
        };
        drop(st);
        for (t, mem, files) in snapshot {
            let schema = t.schema();
            let mem_table: Arc<dyn TableProvider> =
                Arc::new(MemTable::try_new(schema.clone(), vec![mem]).map_err(df_err)?);
            let provider = if files.is_empty() {
                mem_table
            } else {
                let urls = files
                    .iter()
                    .map(ListingTableUrl::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(df_err)?;
                let opts = ListingOptions::new(Arc::new(ParquetFormat::default()))
                    .with_file_extension(".parquet");
                let cfg = ListingTableConfig::new_with_multi_paths(urls)
                    .with_listing_options(opts)
                    .with_schema(schema.clone());
                let files_table: Arc<dyn TableProvider> =
                    Arc::new(ListingTable::try_new(cfg).map_err(df_err)?);
                ctx.read_table(mem_table)
                    .and_then(|m| m.union(ctx.read_table(files_table)?))
                    .map_err(df_err)?
                    .into_view()
            };
            ctx.register_table(t.name(), provider).map_err(df_err)?;
        }
        Ok(ctx)
    }

    /// Runs one read-only statement (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE).
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, StoreError> {
        let ctx = self.session()?;
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx.sql_with_options(sql, opts).await.map_err(df_err)?;
        df.collect().await.map_err(df_err)
    }

    /// [`Store::sql`] with the result as JSON rows.
    pub async fn sql_json(&self, sql: &str) -> Result<QueryResult, StoreError> {
        let batches = self.sql(sql).await?;
        to_json(&batches)
    }
}

/// Record batches → column names + rows of JSON values (maps as objects, lists as arrays,
/// timestamps as ISO-8601 text).
pub fn to_json(batches: &[RecordBatch]) -> Result<QueryResult, StoreError> {
    let columns: Vec<String> = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let mut rows = Vec::new();
    for obj in to_objects(batches)? {
        let mut obj = obj;
        rows.push(
            columns
                .iter()
                .map(|c| obj.remove(c).unwrap_or(serde_json::Value::Null))
                .collect(),
        );
    }
    Ok(QueryResult { columns, rows })
}

pub(crate) fn to_objects(
    batches: &[RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, StoreError> {
    let mut buf = Vec::new();
    {
        let mut w = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut buf);
        for b in batches {
            w.write(b).map_err(df_err)?;
        }
        w.finish().map_err(df_err)?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let v: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&buf).map_err(df_err)?;
    Ok(v)
}

impl Store {
    /// [`Store::sql`] rendered as an aligned text table.
    pub async fn sql_table(&self, sql: &str) -> Result<String, StoreError> {
        let batches = self.sql(sql).await?;
        Ok(
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .map_err(df_err)?
                .to_string(),
        )
    }

    /// [`Store::sql`] rendered as CSV with a header line.
    pub async fn sql_csv(&self, sql: &str) -> Result<String, StoreError> {
        let batches = self.sql(sql).await?;
        let mut buf = Vec::new();
        {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for b in &batches {
                w.write(b).map_err(df_err)?;
            }
        }
        String::from_utf8(buf).map_err(df_err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use model::*;

    use crate::{Store, StoreConfig};

    #[tokio::test]
    async fn a_query_keeps_reading_files_that_retention_drops_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreConfig {
                flush_interval: Duration::from_secs(3600),
                retention_bytes: None,
                retention_age: None,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            - 5 * 3_600_000_000_000;
        let span = Span {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([1; 8]),
            parent_span_id: None,
            trace_state: String::new(),
            name: "op".into(),
            kind: SpanKind::Server,
            start_unix_nano: start,
            end_unix_nano: start + 10,
            attributes: vec![],
            events: vec![],
            links: vec![],
            status_code: StatusCode::Unset,
            status_message: String::new(),
        };
        let batch = Batch::Spans(vec![Group {
            resource: Arc::new(Resource::default()),
            scope: Arc::new(Scope::default()),
            items: vec![span],
        }]);
        store.write(&batch).await.unwrap();
        store.flush().await.unwrap();
        let files = |dir: &std::path::Path| walkdir(&dir.join("otel_traces"));
        assert_eq!(files(dir.path()).len(), 1);

        // A session takes its snapshot, then retention drops every file.
        let ctx = store.session().unwrap();
        crate::flush::retain(&store.shared, None, Some(0));
        assert_eq!(
            files(dir.path()).len(),
            1,
            "still leased by the open session"
        );
        assert!(store.shared.read_state().files.values().all(Vec::is_empty));
        let rows = ctx
            .sql("SELECT * FROM otel_traces")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(rows[0].num_rows(), 1);
        drop(ctx);
        assert!(
            files(dir.path()).is_empty(),
            "deleted with the last session"
        );
    }

    fn walkdir(p: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    out.extend(walkdir(&e.path()));
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }
}
