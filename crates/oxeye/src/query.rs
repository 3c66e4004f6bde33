use anyhow::Context;

use crate::QueryArgs;

pub fn run(a: QueryArgs) -> anyhow::Result<()> {
    let store = store::Store::open_read_only(&a.data_dir).with_context(|| {
        format!(
            "cannot open the store in {} (--data-dir)",
            a.data_dir.display()
        )
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match a.format.as_str() {
            "json" => {
                let r = store.sql_json(&a.sql).await?;
                println!("{}", serde_json::to_string(&r)?);
            }
            "csv" => print!("{}", store.sql_csv(&a.sql).await?),
            "table" => println!("{}", store.sql_table(&a.sql).await?),
            other => anyhow::bail!("--format: expected table, json or csv, found {other:?}"),
        }
        Ok(())
    })
}
