//! `bench/data/hospital.yaml`: what the hospital benchmarks send.

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, Deserialize)]
pub struct HospitalData {
    pub workflow: String,
    pub demo: String,
    pub password: String,
    pub asset_template: String,
    pub asset_codes: AssetCodes,
    pub categories: Vec<String>,
    pub departments: Vec<String>,
    pub report: BTreeMap<String, String>,
    pub lifecycle: Vec<Step>,
    pub ratings: Vec<i64>,
    pub users: Users,
    pub queries: Queries,
    pub reports: Reports,
    pub pages: Vec<Named>,
}

/// How asset codes are written (`pattern` with `{n}`, zero-padded to `digits`).
#[derive(Clone, Debug, Deserialize)]
pub struct AssetCodes {
    pub pattern: String,
    pub digits: usize,
    pub demo_first: usize,
    pub demo_count: usize,
    pub generated_first: usize,
    /// A generated asset's tag (`{code}`: its code), as check-ins send it.
    pub tag: String,
}

impl AssetCodes {
    fn code(&self, n: usize) -> String {
        self.pattern.replace("{n}", &format!("{n:0width$}", width = self.digits))
    }

    /// Order `i`'s asset among the demo's.
    pub fn demo(&self, i: usize) -> String {
        self.code(self.demo_first + i % self.demo_count.max(1))
    }

    /// The `k`th generated asset.
    pub fn generated(&self, k: usize) -> String {
        self.code(self.generated_first + k)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Step {
    pub transition: String,
    #[serde(default = "empty")]
    pub input: Value,
    #[serde(default)]
    pub by_requester: bool,
}

fn empty() -> Value {
    Value::Object(serde_json::Map::new())
}

#[derive(Clone, Debug, Deserialize)]
pub struct Users {
    pub requester: String,
    pub technician: String,
    pub manager: String,
    pub restricted: Vec<Restricted>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Restricted {
    pub label: String,
    pub user: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Named {
    pub name: String,
    pub path: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Queries {
    pub counts: Named,
    pub list: Named,
    pub list_few: Named,
    pub next_page: Named,
    pub order_history: Named,
    pub order: Named,
    pub asset_history: Named,
    pub restricted_list: String,
    pub restricted_closed: String,
    pub restricted_counts: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Reports {
    pub ready: String,
    pub events_ready: String,
    pub timed: Vec<TimedReport>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TimedReport {
    pub report: String,
    pub by: String,
}

impl HospitalData {
    /// `bench/data/hospital.yaml` of the application directory `dir` (the
    /// repository), else the one beside the drivers' sources.
    pub fn load(dir: &Path) -> Result<HospitalData> {
        let beside = dir.join("bench/data/hospital.yaml");
        let path = if beside.exists() { beside } else { Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/hospital.yaml") };
        Self::read(&path)
    }

    pub fn read(path: &Path) -> Result<HospitalData> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Order `i`'s start form, for `asset`.
    pub fn report(&self, i: usize, asset: &str) -> Value {
        let mut r: serde_json::Map<String, Value> = self.report.iter().map(|(k, v)| (k.clone(), Value::String(fill(v, i, asset)))).collect();
        r.insert("asset".into(), asset.into());
        r.insert("category".into(), self.categories[i % self.categories.len()].clone().into());
        r.insert("department".into(), self.departments[i % self.departments.len()].clone().into());
        r.insert("priority".into(), (if i.is_multiple_of(3) { "urgent" } else { "normal" }).into());
        Value::Object(r)
    }

    /// Order `i`'s lifecycle, its text filled for `asset`.
    pub fn steps(&self, i: usize, asset: &str) -> Vec<(String, Value, bool)> {
        let rating = self.ratings.get(i % self.ratings.len().max(1)).copied().unwrap_or(5);
        self.lifecycle.iter().map(|s| (s.transition.clone(), fill_value(&s.input, i, asset, rating), s.by_requester)).collect()
    }
}

/// `{i}` and `{asset}` in a text.
pub fn fill(text: &str, i: usize, asset: &str) -> String {
    text.replace("{i}", &i.to_string()).replace("{asset}", asset)
}

/// A value of the lifecycle filled in: `"{rating}"` alone is the number.
fn fill_value(v: &Value, i: usize, asset: &str, rating: i64) -> Value {
    match v {
        Value::String(s) if s == "{rating}" => Value::from(rating),
        Value::String(s) => Value::String(fill(s, i, asset)),
        Value::Array(a) => Value::Array(a.iter().map(|x| fill_value(x, i, asset, rating)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), fill_value(x, i, asset, rating))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hospital_data_reads_and_fills() {
        let d = super::HospitalData::load(std::path::Path::new("/nonexistent")).unwrap_or_else(|e| panic!("{e}"));
        let r = d.report(3, "EQ-000104");
        assert_eq!(r["asset"], "EQ-000104");
        assert_eq!(r["priority"], "urgent");
        assert!(r["description"].as_str().unwrap_or_default().contains("工单 3"));
        let steps = d.steps(3, "EQ-000104");
        assert_eq!(steps[1].1["place"]["tag"], "RFID-EQ-000104");
        assert!(steps.last().is_some_and(|s| s.2), "the requester confirms");
        assert_eq!(steps.last().map(|s| s.1["rating"].clone()), Some(serde_json::json!(3)));
        let codes = &d.asset_codes;
        assert_eq!((codes.demo(3), codes.demo(53), codes.generated(7)), ("EQ-000104".into(), "EQ-000104".into(), "EQ-200007".into()));
        assert_eq!(codes.tag.replace("{code}", &codes.generated(7)), "RFID-EQ-200007");
    }
}
