//! Every `code` an error answer of the API can have, with its HTTP status:
//! one table, so a code cannot answer with two statuses, and a test checks
//! that docs/api.md lists exactly these.

use axum::http::StatusCode;

macro_rules! codes {
    ($($variant:ident = ($status:ident, $name:literal, $doc:literal),)*) => {
        /// A stable error code (the `code` of an error answer).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// When the code is answered, in words (the table of docs/api.md).
            pub fn doc(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $doc,)*
                }
            }
        }
    };
}

codes! {
    BadRequest = (BAD_REQUEST, "bad_request", "a request the server cannot read (e.g. a bad header)"),
    InvalidJson = (BAD_REQUEST, "invalid_json", "the body is not JSON"),
    InvalidQuery = (BAD_REQUEST, "invalid_query", "a bad query parameter (`limit=abc`)"),
    InvalidPath = (BAD_REQUEST, "invalid_path", "a part of the URL is not valid (not UTF-8, not a number where one is expected)"),
    InvalidIdempotencyKey = (BAD_REQUEST, "invalid_idempotency_key", "an empty or over-long `Idempotency-Key`"),
    Unauthorized = (UNAUTHORIZED, "unauthorized", "no token or session, or one that is not valid (unknown, expired, revoked, user disabled)"),
    Forbidden = (FORBIDDEN, "forbidden", "the actor lacks the role or team the transition, record operation or route needs"),
    GuardFailed = (FORBIDDEN, "guard_failed", "the transition's `when` condition is false (the message is its `message`, in the user's language)"),
    CsrfFailed = (FORBIDDEN, "csrf_failed", "a change sent with the session cookie but without the page's CSRF token, or from another site"),
    NotFound = (NOT_FOUND, "not_found", "no such thing (also: an instance the caller may not read)"),
    UnknownWorkflow = (NOT_FOUND, "unknown_workflow", "no such workflow"),
    UnknownTransition = (NOT_FOUND, "unknown_transition", "no such transition (`details.transitions` lists the workflow's transitions)"),
    UnknownForm = (NOT_FOUND, "unknown_form", "no such form"),
    UnknownBundleVersion = (NOT_FOUND, "unknown_bundle_version", "no such definitions version"),
    UnknownRecordType = (NOT_FOUND, "unknown_record_type", "no such record type"),
    MethodNotAllowed = (METHOD_NOT_ALLOWED, "method_not_allowed", "the path exists, the method does not"),
    TransitionNotAllowed = (CONFLICT, "transition_not_allowed", "the transition does not start from the instance's state (`details: {state, allowed_from}`)"),
    VersionConflict = (CONFLICT, "version_conflict", "`expected_version` is not the instance's version (`details: {expected_version, current_version}`)"),
    AlreadyExists = (CONFLICT, "already_exists", "a record or user with this id exists"),
    RecordReferenced = (CONFLICT, "record_referenced", "a record that something refers to cannot be deleted (archive it)"),
    LedgerViolation = (CONFLICT, "ledger_violation", "a movement would take a balance below zero (`details: {ledger, dimensions, requested, available}`); the whole command is refused"),
    Contention = (CONFLICT, "contention", "the instance kept changing under a command without `expected_version`"),
    PayloadTooLarge = (PAYLOAD_TOO_LARGE, "payload_too_large", "the body is over the size limit (2 MB)"),
    UriTooLong = (URI_TOO_LONG, "uri_too_long", "the URL is too long (an URL over 64 KB is refused by the HTTP parser itself, with an empty body)"),
    FileTooLarge = (PAYLOAD_TOO_LARGE, "file_too_large", "an upload over the size limit (`FLOWFORM_MAX_UPLOAD_MB`, default 10)"),
    UnsupportedMediaType = (UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "the body is not sent as `application/json`"),
    InvalidBody = (UNPROCESSABLE_ENTITY, "invalid_body", "JSON of the wrong shape (unknown keys, wrong types)"),
    FormInvalid = (UNPROCESSABLE_ENTITY, "form_invalid", "field errors, one per field, with the field's path"),
    InvalidMovement = (UNPROCESSABLE_ENTITY, "invalid_movement", "a movement posted by hand is malformed (unknown kind, missing dimension, quantity)"),
    PostingRefused = (UNPROCESSABLE_ENTITY, "posting_refused", "a movement over the ledger's `max_quantity`, more than 200 movements, a reason over 500 characters, a `return` of more than the instance issued (`details.ReturnExceedsIssued: {ledger, dims, requested, issued, returned, returnable}`), or a `return` posted by hand"),
    FileRejected = (UNPROCESSABLE_ENTITY, "file_rejected", "an upload that is empty, has no part named `file`, or whose content is not what its name or type says (an HTML page named `.png`)"),
    LinkedStartFailed = (UNPROCESSABLE_ENTITY, "linked_start_failed", "a workflow that the transition starts (`starts:`) refused its start; nothing was done (`details: {workflow, item, code, details}`: the start's own error)"),
    InvalidCandidate = (UNPROCESSABLE_ENTITY, "invalid_candidate", "the candidate definitions of a replay cannot be read or have problems (`details`: the diagnostics, `{file, line, column, code, message}`)"),
    RuleFailed = (UNPROCESSABLE_ENTITY, "rule_failed", "a rule failed or exceeded a limit (`details: [{script, file, line, column, kind}]`)"),
    IdempotencyKeyReused = (UNPROCESSABLE_ENTITY, "idempotency_key_reused", "the key was used before for a different request"),
    InvalidAccount = (UNPROCESSABLE_ENTITY, "invalid_account", "a user with an undeclared role or team, a short password, a token lifetime out of range"),
    TooManyRequests = (TOO_MANY_REQUESTS, "too_many_requests", "too many failed sign-ins for this user name or address; wait"),
    HeadersTooLarge = (REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", "the request's headers are too large"),
    Internal = (INTERNAL_SERVER_ERROR, "internal", "a bug or a storage failure; the message has an error id to find in the log"),
    ShuttingDown = (SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping"),
    NotReady = (SERVICE_UNAVAILABLE, "not_ready", "what the answer needs is still being prepared (a report's data in the two minutes after a start); try again"),
}

impl ErrorCode {
    /// The code's meaning in Chinese: the top-level `message` of an error
    /// answered to a client that asked for zh (`Accept-Language: zh-CN`)
    /// when the message itself is not already in Chinese.
    pub fn zh(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "请求无法识别",
            ErrorCode::InvalidJson => "请求内容不是有效的 JSON",
            ErrorCode::InvalidQuery => "查询参数不正确",
            ErrorCode::InvalidPath => "地址中的参数不正确",
            ErrorCode::InvalidIdempotencyKey => "Idempotency-Key 为空或过长",
            ErrorCode::Unauthorized => "未登录或登录已失效，请重新登录",
            ErrorCode::Forbidden => "您没有执行此操作的权限",
            ErrorCode::GuardFailed => "当前不满足此操作的条件",
            ErrorCode::CsrfFailed => "页面已过期，请刷新后重试",
            ErrorCode::NotFound => "找不到该内容，或您无权查看",
            ErrorCode::UnknownWorkflow => "没有这个流程",
            ErrorCode::UnknownTransition => "该流程没有这个操作",
            ErrorCode::UnknownForm => "没有这个表单",
            ErrorCode::UnknownBundleVersion => "没有这个定义版本",
            ErrorCode::UnknownRecordType => "没有这种基础数据",
            ErrorCode::MethodNotAllowed => "该地址不支持此请求方式",
            ErrorCode::TransitionNotAllowed => "当前状态下不能执行此操作",
            ErrorCode::VersionConflict => "该记录刚被其他人修改，请刷新后重试",
            ErrorCode::AlreadyExists => "该编号已存在",
            ErrorCode::RecordReferenced => "该记录已被引用，不能删除（可以停用）",
            ErrorCode::LedgerViolation => "库存不足，操作未执行",
            ErrorCode::Contention => "操作冲突，请重试",
            ErrorCode::PayloadTooLarge => "请求内容过大",
            ErrorCode::UriTooLong => "地址过长",
            ErrorCode::FileTooLarge => "文件过大",
            ErrorCode::UnsupportedMediaType => "请求内容应为 JSON",
            ErrorCode::InvalidBody => "请求内容的格式不正确",
            ErrorCode::FormInvalid => "填写的内容有误，请检查标出的字段",
            ErrorCode::InvalidMovement => "出入库记录填写有误",
            ErrorCode::PostingRefused => "出入库数量超出允许范围",
            ErrorCode::FileRejected => "文件内容与类型不符或为空",
            ErrorCode::LinkedStartFailed => "无法发起关联流程，本次操作未执行",
            ErrorCode::InvalidCandidate => "待验证的定义无法读取或有错误",
            ErrorCode::RuleFailed => "业务规则执行出错",
            ErrorCode::IdempotencyKeyReused => "该请求编号已用于另一请求",
            ErrorCode::InvalidAccount => "账号信息不正确",
            ErrorCode::TooManyRequests => "失败次数过多，请稍后再试",
            ErrorCode::HeadersTooLarge => "请求头过大",
            ErrorCode::Internal => "服务器出错，已记录，请稍后重试",
            ErrorCode::ShuttingDown => "服务正在停止，请稍后重试",
            ErrorCode::NotReady => "数据正在准备中，请稍后重试",
        }
    }

    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// docs/api.md lists exactly the codes of the API, each with its status.
    #[test]
    fn the_api_docs_list_exactly_these_codes() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap_or_default();
        let mut listed: Vec<(u16, String)> = docs
            .lines()
            .skip_while(|l| !l.starts_with("| status | code | when |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                Some((cells.get(1)?.parse().ok()?, cells.get(2)?.trim_matches('`').to_string()))
            })
            .collect();
        let mut ours: Vec<(u16, String)> = ErrorCode::ALL.iter().map(|c| (c.status().as_u16(), c.as_str().to_string())).collect();
        listed.sort();
        ours.sort();
        assert_eq!(listed, ours, "the table in docs/api.md and ErrorCode differ");
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "every code once");
    }
}
