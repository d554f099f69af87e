use flowform_store::tables::Table;
use flowform_store::{RedbStore, Store};
use std::ops::Bound::Unbounded;
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap();
    let store = RedbStore::open(std::path::Path::new(&dir))?;
    store.read(&mut |r| {
        for t in [Table::Events, Table::Instances, Table::InstanceIndex, Table::UserCounts, Table::Movements, Table::Refs] {
            let mut n = 0;
            r.range(t, Unbounded, Unbounded, false, &mut |k, v| {
                n += 1;
                if n <= 9 {
                    println!("{} {:?} => {:?}", t.name(), k, String::from_utf8_lossy(v));
                }
                Ok(n < 9)
            })?;
        }
        Ok(())
    })?;
    Ok(())
}
