//! Where a store's bytes go: entries, key bytes and value bytes of each
//! table, read from a stopped store (docs/performance.md, "Where the bytes go").
//!
//! cargo run --release -p flowform-store --example table_sizes -- DATA_DIR

use flowform_store::tables::Table;
use flowform_store::{RedbStore, Store};
use std::ops::Bound::Unbounded;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: table_sizes DATA_DIR (a stopped store)")?;
    let store = RedbStore::open(std::path::Path::new(&dir))?;
    let mut total = 0;
    store.read(&mut |r| {
        for t in Table::ALL {
            let (mut entries, mut keys, mut values) = (0usize, 0usize, 0usize);
            r.range(t, Unbounded, Unbounded, false, &mut |k, v| {
                entries += 1;
                keys += k.len();
                values += v.len();
                Ok(true)
            })?;
            total += keys + values;
            if entries > 0 {
                println!("{:16} {entries:>9} entries {keys:>11} key bytes {values:>11} value bytes", t.name());
            }
        }
        Ok(())
    })?;
    println!("{:16} {total:>43} bytes of keys and values", "total");
    Ok(())
}
