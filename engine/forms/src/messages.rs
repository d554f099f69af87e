//! Field error messages in the user's language.

use crate::FieldError;
use flowform_model::{FieldDef, Label};
use jsonschema::error::{TypeKind, ValidationErrorKind};

/// The language of messages for end users.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    ZhCn,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    /// Picks a language from an `Accept-Language` header value.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        for part in header.split(',') {
            let tag = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if tag.starts_with("zh") {
                return Some(Lang::ZhCn);
            }
            if tag.starts_with("en") {
                return Some(Lang::En);
            }
        }
        None
    }

    fn pick(self, zh: String, en: String) -> String {
        match self {
            Lang::ZhCn => zh,
            Lang::En => en,
        }
    }

    pub(crate) fn msg_not_object(self) -> String {
        self.pick("提交的数据必须是一个对象".into(), "the submitted data must be an object".into())
    }

    pub(crate) fn msg_required(self, label: &Label) -> String {
        let name = label.get(self.code(), "");
        self.pick(format!("请填写“{name}”"), format!("{name} is required"))
    }
}

fn find_field<'a>(fields: &'a [FieldDef], path: &str) -> Option<&'a FieldDef> {
    let mut current = fields;
    let mut found = None;
    for seg in path.split('.') {
        let name = seg.split('[').next().unwrap_or(seg);
        let f = current.iter().find(|f| f.name == name)?;
        current = &f.fields;
        found = Some(f);
    }
    found
}

/// Turns a schema error into a field error.
pub(crate) fn describe(path: &str, kind: &ValidationErrorKind, fields: &[FieldDef], lang: Lang) -> FieldError {
    let field = find_field(fields, path);
    let name = field.map_or_else(|| path.to_string(), |f| f.label.get(lang.code(), &f.name).to_string());
    let join = |p: &str, child: &str| {
        if p.is_empty() { child.to_string() } else { format!("{p}.{child}") }
    };
    let (field_path, code, message) = match kind {
        ValidationErrorKind::Required { property } => {
            let prop = property.as_str().unwrap_or_default();
            let child_path = join(path, prop);
            let label = find_field(fields, &child_path).map(|f| f.label.clone()).unwrap_or_else(|| Label::plain(prop));
            (child_path, "required", lang.msg_required(&label))
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let list = unexpected.join(", ");
            let first = unexpected.first().cloned().unwrap_or_default();
            (join(path, &first), "unknown_field", lang.pick(format!("表单中没有字段 {list}"), format!("the form has no field {list}")))
        }
        ValidationErrorKind::MinLength { limit } => {
            (path.into(), "too_short", lang.pick(format!("“{name}”至少需要 {limit} 个字符"), format!("{name} must be at least {limit} characters")))
        }
        ValidationErrorKind::MaxLength { limit } => {
            (path.into(), "too_long", lang.pick(format!("“{name}”最多 {limit} 个字符"), format!("{name} must be at most {limit} characters")))
        }
        ValidationErrorKind::Minimum { limit } | ValidationErrorKind::ExclusiveMinimum { limit } => {
            (path.into(), "too_small", lang.pick(format!("“{name}”不能小于 {limit}"), format!("{name} must be at least {limit}")))
        }
        ValidationErrorKind::Maximum { limit } | ValidationErrorKind::ExclusiveMaximum { limit } => {
            (path.into(), "too_large", lang.pick(format!("“{name}”不能大于 {limit}"), format!("{name} must be at most {limit}")))
        }
        ValidationErrorKind::MinItems { limit } => {
            (path.into(), "too_few", lang.pick(format!("“{name}”至少需要 {limit} 项"), format!("{name} needs at least {limit} items")))
        }
        ValidationErrorKind::MaxItems { limit } => {
            (path.into(), "too_many", lang.pick(format!("“{name}”最多 {limit} 项"), format!("{name} allows at most {limit} items")))
        }
        ValidationErrorKind::Pattern { .. } => {
            (path.into(), "bad_format", lang.pick(format!("“{name}”的格式不正确"), format!("{name} is not in the expected format")))
        }
        ValidationErrorKind::Format { format } => {
            let (zh, en) = match format.as_str() {
                "date" => ("日期,格式为 2026-05-01", "a date like 2026-05-01"),
                "date-time" => ("时间,格式为 2026-05-01T08:30:00+08:00", "a date and time like 2026-05-01T08:30:00+08:00"),
                _ => ("正确的格式", "in the expected format"),
            };
            (path.into(), "bad_format", lang.pick(format!("“{name}”必须是{zh}"), format!("{name} must be {en}")))
        }
        ValidationErrorKind::Enum { .. } => {
            let options = field.map(|f| f.options.iter().map(|o| o.value.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
            (path.into(), "not_an_option", lang.pick(format!("“{name}”必须是以下之一:{options}"), format!("{name} must be one of: {options}")))
        }
        ValidationErrorKind::UniqueItems => (path.into(), "duplicate_items", lang.pick(format!("“{name}”有重复的选项"), format!("{name} lists an item twice"))),
        ValidationErrorKind::AnyOf { .. } => (
            path.into(),
            "incomplete_location",
            lang.pick(format!("“{name}”需要标签编号或经纬度"), format!("{name} needs a tag id or coordinates (lat and lng)")),
        ),
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(ts) => format!("{ts:?}"),
            };
            let (zh, en) = match expected.as_str() {
                "integer" => ("整数", "a whole number"),
                "number" => ("数字", "a number"),
                "string" => ("文本", "text"),
                "boolean" => ("是/否", "true or false"),
                "array" => ("列表", "a list"),
                "object" => ("对象", "an object"),
                _ => ("正确的类型", "of the right type"),
            };
            (path.into(), "wrong_type", lang.pick(format!("“{name}”必须是{zh}"), format!("{name} must be {en}")))
        }
        other => (path.into(), "invalid", lang.pick(format!("“{name}”无效"), format!("{name} is not valid: {other:?}"))),
    };
    FieldError { field: field_path, code, message }
}
