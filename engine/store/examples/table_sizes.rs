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
    drop(store);
    // redb's own view of the file: the pages in use and how full they are.
    let path = std::path::Path::new(&dir).join("flowform.redb");
    let file = std::fs::metadata(&path)?;
    let db = redb::Database::open(&path)?;
    let tx = db.begin_write()?;
    let st = tx.stats()?;
    tx.abort()?;
    let page = st.page_size() as u64;
    println!("file length {} bytes, {} bytes of blocks on disk", file.len(), std::os::unix::fs::MetadataExt::blocks(&file) * 512);
    println!(
        "pages in use {} ({} bytes: {} leaf, {} branch), stored {} bytes, metadata {} bytes, fragmented {} bytes",
        st.allocated_pages(),
        st.allocated_pages() * page,
        st.leaf_pages(),
        st.branch_pages(),
        st.stored_bytes(),
        st.metadata_bytes(),
        st.fragmented_bytes()
    );
    Ok(())
}
