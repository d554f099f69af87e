//! Importing records from CSV and Excel files, and exporting them.
//!
//! Every row goes through the record type's form (and reference checks) before
//! anything is written; with errors, nothing is written unless the caller asks
//! to skip invalid rows. Columns are matched by field name or by label (zh-CN or
//! en), so a hospital's own Excel ledger with Chinese headers imports as is.

use crate::{CommandError, Runtime};
use flowform_core::records::Record;
use flowform_core::{Actor, Lang};
use flowform_model::{FieldDef, FieldType};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: the file type must be .csv, .xlsx or .xls")]
    UnknownFormat { path: String },
    #[error("{0}")]
    Columns(String),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// A table read from a file: the header, and each data row with its row number
/// as the spreadsheet shows it (the header is row 1).
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

pub fn read_table(path: &Path) -> Result<Table, ImportError> {
    let shown = path.display().to_string();
    let read_err = |message: String| ImportError::Read { path: shown.clone(), message };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let mut cells: Vec<Vec<String>> = match ext.as_str() {
        "csv" => {
            let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
            let text = String::from_utf8(bytes).map_err(|_| read_err("the CSV file is not UTF-8; save it as \"CSV UTF-8\"".into()))?;
            let text = text.trim_start_matches('\u{feff}');
            let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
            let mut out = Vec::new();
            for record in reader.records() {
                let record = record.map_err(|e| read_err(e.to_string()))?;
                out.push(record.iter().map(|c| unescape_formula(c.trim()).to_string()).collect());
            }
            out
        }
        "xlsx" | "xls" | "xlsm" => {
            use calamine::Reader;
            let mut workbook = calamine::open_workbook_auto(path).map_err(|e| read_err(e.to_string()))?;
            let range = workbook.worksheet_range_at(0).ok_or_else(|| read_err("the workbook has no sheet".into()))?.map_err(|e| read_err(e.to_string()))?;
            range.rows().map(|row| row.iter().map(cell_text).collect()).collect()
        }
        _ => return Err(ImportError::UnknownFormat { path: shown }),
    };
    if cells.is_empty() {
        return Err(read_err("the file is empty".into()));
    }
    let header = cells.remove(0);
    let rows = cells.into_iter().enumerate().map(|(i, r)| (i + 2, r)).filter(|(_, r)| r.iter().any(|c| !c.is_empty())).collect();
    Ok(Table { header, rows })
}

fn cell_text(cell: &calamine::Data) -> String {
    use calamine::Data;
    match cell {
        Data::Empty => String::new(),
        Data::String(s) => s.trim().to_string(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(d) => excel_date(d.as_f64()),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => format!("#{e:?}"),
    }
}

/// An Excel serial date (days since 1899-12-30) as `YYYY-MM-DD`, with the time when there is one.
fn excel_date(serial: f64) -> String {
    let days = serial.floor() as i64;
    let secs = ((serial - serial.floor()) * 86_400.0).round() as i64;
    let base = jiff::civil::date(1899, 12, 30);
    match jiff::Span::new().try_days(days).ok().and_then(|span| base.checked_add(span).ok()).ok_or(()) {
        Ok(date) if secs == 0 => date.to_string(),
        Ok(date) => {
            let t = jiff::civil::Time::new((secs / 3600) as i8, ((secs % 3600) / 60) as i8, (secs % 60) as i8, 0).unwrap_or_default();
            format!("{}T{}", date, t)
        }
        Err(_) => serial.to_string(),
    }
}

/// Which field a column header means: the name, or a label in any language.
fn match_columns(header: &[String], fields: &[FieldDef]) -> Result<Vec<Option<usize>>, String> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for h in header {
        let h = h.trim();
        if h.is_empty() {
            out.push(None);
            continue;
        }
        let found = fields
            .iter()
            .position(|f| f.name == h || f.label.get("zh-CN", "") == h || f.label.get("en", "") == h || f.label.get("en", "").eq_ignore_ascii_case(h));
        if found.is_none() {
            unknown.push(h.to_string());
        }
        out.push(found);
    }
    if !unknown.is_empty() {
        let known: Vec<String> = fields.iter().map(|f| format!("{} ({})", f.name, f.label.get("zh-CN", ""))).collect();
        return Err(format!(
            "unknown column(s) {}; columns can be: {}",
            unknown.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", "),
            known.join(", ")
        ));
    }
    Ok(out)
}

/// A cell's text as the field's JSON value.
fn convert(f: &FieldDef, text: &str) -> Result<Value, String> {
    let opt = |t: &str| -> Result<Value, String> {
        f.options
            .iter()
            .find(|o| o.value == t || o.label.get("zh-CN", "") == t || o.label.get("en", "").eq_ignore_ascii_case(t))
            .map(|o| Value::String(o.value.clone()))
            .ok_or_else(|| format!("`{t}` is not one of: {}", f.options.iter().map(|o| o.value.as_str()).collect::<Vec<_>>().join(", ")))
    };
    match f.field_type {
        FieldType::Integer => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<f64>().ok().filter(|x| x.fract() == 0.0).map(|x| Value::from(x as i64)).ok_or(format!("`{text}` is not a whole number"))),
        FieldType::Number => text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number).ok_or(format!("`{text}` is not a number")),
        FieldType::Boolean => match text.to_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "是" => Ok(Value::Bool(true)),
            "false" | "no" | "n" | "0" | "否" => Ok(Value::Bool(false)),
            _ => Err(format!("`{text}` is not yes/no (是/否)")),
        },
        FieldType::Enum if f.multiple => {
            text.split([',', '，', '、', ';']).map(str::trim).filter(|t| !t.is_empty()).map(opt).collect::<Result<Vec<_>, _>>().map(Value::Array)
        }
        FieldType::Enum => opt(text),
        FieldType::Group | FieldType::Files | FieldType::Location => serde_json::from_str(text).map_err(|e| format!("must be JSON here: {e}")),
        _ => Ok(Value::String(text.to_string())),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RowError {
    pub row: usize,
    pub field: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    pub record_type: String,
    pub rows: usize,
    pub valid: usize,
    pub imported: usize,
    pub errors: Vec<RowError>,
    pub dry_run: bool,
}

impl Runtime {
    /// Validates every row, then (unless `dry_run`, and unless any row is invalid
    /// without `skip_invalid`) creates the records.
    pub fn import(&self, record_type: &str, table: &Table, dry_run: bool, skip_invalid: bool, actor: &Actor, lang: Lang) -> Result<ImportReport, ImportError> {
        let bundle = self.bundle();
        let (_, form) = crate::records::record_form(&bundle, record_type)?;
        let fields = &form.def.fields;
        let columns = match_columns(&table.header, fields).map_err(ImportError::Columns)?;
        let mut report = ImportReport { record_type: record_type.to_string(), rows: table.rows.len(), valid: 0, imported: 0, errors: Vec::new(), dry_run };
        let mut valid: Vec<Value> = Vec::new();
        let mut pending: BTreeSet<(String, String)> = BTreeSet::new();
        let now = self.now();
        for (row, cells) in &table.rows {
            let mut data = Map::new();
            let mut row_errors = Vec::new();
            for (i, column) in columns.iter().enumerate() {
                let (Some(c), Some(text)) = (column, cells.get(i)) else { continue };
                if text.is_empty() {
                    continue;
                }
                match convert(&fields[*c], text) {
                    Ok(v) => {
                        data.insert(fields[*c].name.clone(), v);
                    }
                    Err(message) => row_errors.push(RowError { row: *row, field: fields[*c].name.clone(), message }),
                }
            }
            let input = Value::Object(data);
            if row_errors.is_empty() {
                match flowform_core::records::create(&bundle, record_type, &input, actor, now, Some(0), lang) {
                    Err(flowform_core::Rejection::InvalidInput(errors)) => {
                        row_errors.extend(errors.into_iter().map(|e| RowError { row: *row, field: e.field, message: e.message }))
                    }
                    Err(other) => row_errors.push(RowError { row: *row, field: String::new(), message: other.to_string() }),
                    Ok((record, _)) => {
                        let refs = self.check_references_pending(&bundle, fields, &record.data, lang, &pending)?;
                        row_errors.extend(refs.into_iter().map(|e| RowError { row: *row, field: e.field, message: e.message }));
                        let is_sequence = flowform_core::records::needs_sequence(&bundle, record_type);
                        if !is_sequence {
                            if pending.contains(&(record_type.to_string(), record.id.clone())) {
                                row_errors.push(RowError { row: *row, field: String::new(), message: format!("id `{}` appears twice in the file", record.id) });
                            } else if self.store.record(record_type, &record.id).map_err(CommandError::from)?.is_some() {
                                row_errors.push(RowError {
                                    row: *row,
                                    field: String::new(),
                                    message: format!("a {record_type} `{}` already exists", record.id),
                                });
                            }
                            pending.insert((record_type.to_string(), record.id.clone()));
                        }
                    }
                }
            }
            if row_errors.is_empty() {
                valid.push(input);
            } else {
                report.errors.extend(row_errors);
            }
        }
        report.valid = valid.len();
        if dry_run || (!report.errors.is_empty() && !skip_invalid) {
            return Ok(report);
        }
        for input in valid {
            self.create_record(record_type, &input, actor, lang)?;
            report.imported += 1;
        }
        Ok(report)
    }

    /// The records of a query as a table of text: headers are the field labels.
    /// Which columns of [`Runtime::export_table`] hold numbers (number and integer fields).
    pub fn numeric_columns(&self, record_type: &str) -> Result<Vec<bool>, CommandError> {
        let bundle = self.bundle();
        let (_, form) = crate::records::record_form(&bundle, record_type)?;
        Ok(form.def.fields.iter().map(|f| matches!(f.field_type, FieldType::Integer | FieldType::Number)).collect())
    }

    pub fn export_table(&self, record_type: &str, query: &crate::records::RecordQuery, lang: Lang) -> Result<(Vec<String>, Vec<Vec<String>>), CommandError> {
        let bundle = self.bundle();
        let (_, form) = crate::records::record_form(&bundle, record_type)?;
        let fields = &form.def.fields;
        let header: Vec<String> = fields.iter().map(|f| f.label.get(lang.code(), &f.name).to_string()).collect();
        let mut rows = Vec::new();
        let mut q = query.clone();
        q.limit = 1000;
        loop {
            let page = self.list_records(record_type, &q)?;
            for r in &page.items {
                rows.push(export_row(fields, r, lang));
            }
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        Ok((header, rows))
    }
}

fn export_row(fields: &[FieldDef], record: &Record, lang: Lang) -> Vec<String> {
    fields
        .iter()
        .map(|f| match record.data.get(&f.name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if f.field_type == FieldType::Enum => {
                f.options.iter().find(|o| &o.value == s).map_or(s.clone(), |o| o.label.get(lang.code(), s).to_string())
            }
            Some(Value::Array(items)) if f.field_type == FieldType::Enum => items
                .iter()
                .filter_map(Value::as_str)
                .map(|s| f.options.iter().find(|o| o.value == s).map_or(s.to_string(), |o| o.label.get(lang.code(), s).to_string()))
                .collect::<Vec<_>>()
                .join("、"),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => if *b { "是" } else { "否" }.to_string(),
            Some(other) if matches!(f.field_type, FieldType::Integer | FieldType::Number) => other.to_string(),
            Some(other) => other.to_string(),
        })
        .collect()
}

/// CSV in UTF-8 with a byte-order mark, so Excel shows Chinese correctly.
/// Characters that make a spreadsheet read a cell as a formula (OWASP's list).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A CSV cell that a spreadsheet shows as text: a cell that would start a
/// formula gets a leading `'` (which spreadsheets hide).
pub fn escape_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) { std::borrow::Cow::Owned(format!("'{cell}")) } else { std::borrow::Cow::Borrowed(cell) }
}

/// The inverse of [`escape_formula`], so export → import round-trips.
pub fn unescape_formula(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
        _ => cell,
    }
}

/// CSV (UTF-8 with a BOM, for Excel) with formula-like cells escaped.
pub fn to_csv(header: &[String], rows: &[Vec<String>]) -> Result<Vec<u8>, CommandError> {
    let mut out = "\u{feff}".as_bytes().to_vec();
    {
        let mut w = csv::Writer::from_writer(&mut out);
        w.write_record(header.iter().map(|c| escape_formula(c).into_owned())).map_err(|e| CommandError::Internal(e.to_string()))?;
        for r in rows {
            w.write_record(r.iter().map(|c| escape_formula(c).into_owned())).map_err(|e| CommandError::Internal(e.to_string()))?;
        }
        w.flush().map_err(|e| CommandError::Internal(e.to_string()))?;
    }
    Ok(out)
}

/// An xlsx workbook: columns marked `numeric` (number and integer fields)
/// get number cells; every other cell is text, exactly as stored, so a phone
/// number `+8613800000000`, a 20-digit code or `1e3` stay what they are.
pub fn to_xlsx(sheet_name: &str, header: &[String], rows: &[Vec<String>], numeric: &[bool]) -> Result<Vec<u8>, CommandError> {
    let err = |e: rust_xlsxwriter::XlsxError| CommandError::Internal(format!("cannot write xlsx: {e}"));
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name(sheet_name).map_err(err)?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    for (c, h) in header.iter().enumerate() {
        sheet.write_string_with_format(0, c as u16, h, &bold).map_err(err)?;
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            match v.parse::<f64>() {
                Ok(n) if numeric.get(c).copied().unwrap_or(false) && n.is_finite() => sheet.write_number((r + 1) as u32, c as u16, n).map_err(err)?,
                _ => sheet.write_string((r + 1) as u32, c as u16, v).map_err(err)?,
            };
        }
    }
    workbook.save_to_buffer().map_err(err)
}

#[cfg(test)]
mod tests {
    /// Regression: a date cell far past jiff's range panicked in `Span::days`.
    #[test]
    fn excel_dates_past_the_calendar_are_kept_as_numbers() {
        assert_eq!(super::excel_date(45000.0), "2023-03-15");
        assert_eq!(super::excel_date(45000.5), "2023-03-15T12:00:00");
        assert_eq!(super::excel_date(1e18), "1000000000000000000");
        assert_eq!(super::excel_date(-1e18), "-1000000000000000000");
        assert!(!super::excel_date(f64::NAN).is_empty());
    }
}
