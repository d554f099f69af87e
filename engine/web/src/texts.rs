//! The words of the pages themselves (not of any application: those come
//! from the definitions), in zh-CN and en.

use flowform_core::Lang;
use serde_json::{Map, Value};

static TEXTS: &[(&str, &str, &str)] = &[
    ("home", "首页", "Home"),
    ("tasks", "待办", "Tasks"),
    ("start", "发起", "Start"),
    ("me", "我的", "Me"),
    ("my_tasks", "我的待办", "Assigned to me"),
    ("team_queue", "班组待接单", "My team's queue"),
    ("my_requests", "我发起的", "My requests"),
    ("overdue", "已超时", "Overdue"),
    ("overdue_items", "超时事项", "Overdue"),
    ("unread", "未读通知", "Unread notifications"),
    ("inbox", "消息", "Notifications"),
    ("nothing", "暂无", "Nothing here"),
    ("start_new", "可发起的流程", "Start something"),
    ("submit", "提交", "Submit"),
    ("cancel", "返回", "Back"),
    ("required", "必填", "required"),
    ("optional", "选填", "optional"),
    ("add_item", "添加一项", "Add one"),
    ("remove", "删除", "Remove"),
    ("item", "第 {n} 项", "Item {n}"),
    ("take_photo", "拍照或选择文件", "Take a photo or choose a file"),
    ("uploading", "正在上传…", "Uploading…"),
    ("upload_failed", "上传失败", "Upload failed"),
    ("sign_here", "请在此处签名", "Sign here"),
    ("clear", "清除", "Clear"),
    ("tag", "标签号", "Tag"),
    ("use_my_location", "使用当前位置", "Use my location"),
    ("search", "搜索", "Search"),
    ("choose", "请选择", "Choose"),
    ("chosen", "已选择", "Chosen"),
    ("change", "更换", "Change"),
    ("yes", "是", "Yes"),
    ("no", "否", "No"),
    ("history", "处理记录", "History"),
    ("actions", "可进行的操作", "What you can do"),
    ("details", "详情", "Details"),
    ("linked_orders", "关联工单", "Linked orders"),
    ("dashboards", "统计看板", "Dashboards"),
    ("date_from", "开始日期", "From"),
    ("date_to", "结束日期（不含）", "To (exclusive)"),
    ("apply", "查询", "Apply"),
    ("group_by", "分组", "Group by"),
    ("rows", "条数", "Rows"),
    ("download_csv", "下载 CSV", "Download CSV"),
    ("download_xlsx", "下载 Excel", "Download Excel"),
    ("deadline_met", "已按时完成", "met"),
    ("deadline_met_late", "已完成（超时）", "met late"),
    ("deadline_missed", "已超时", "missed"),
    ("deadline_paused", "已暂停计时", "paused"),
    ("started_from", "发起自", "Started from"),
    ("state", "状态", "State"),
    ("team", "班组", "Team"),
    ("assignee", "处理人", "Assignee"),
    ("requester", "发起人", "Requested by"),
    ("created", "发起时间", "Started"),
    ("due", "截止", "Due"),
    ("all", "全部", "All"),
    ("more", "更多", "More"),
    ("next_page", "下一页", "Next page"),
    ("form_errors", "请检查标出的内容。", "Please check the marked fields."),
    (
        "stale",
        "这条记录刚被其他人修改过。您填写的内容已保留，请核对后重新提交。",
        "Someone else changed this just now. What you typed is kept: check it and submit again.",
    ),
    ("saved", "已提交", "Submitted"),
    ("started_by", "发起", "started it"),
    ("timer", "系统(定时)", "the system (timer)"),
    ("changed", "修改", "changed"),
    ("sign_out", "退出登录", "Sign out"),
    ("sign_out_everywhere", "退出所有设备", "Sign out everywhere"),
    ("language", "语言", "Language"),
    ("roles", "角色", "Roles"),
    ("teams", "班组", "Teams"),
    ("records", "基础数据", "Records"),
    ("ledgers", "库存台账", "Ledgers"),
    ("admin", "系统管理", "Administration"),
    ("board", "调度看板", "Dispatch board"),
    ("unassigned", "未分派", "Unassigned"),
    ("mark_read", "标为已读", "Mark read"),
    ("open", "查看", "Open"),
    ("new_record", "新建", "New"),
    ("edit", "编辑", "Edit"),
    ("archive", "停用", "Archive"),
    ("restore", "恢复", "Restore"),
    ("archived", "已停用", "Archived"),
    ("balance", "结存", "Balance"),
    ("below_threshold", "低于安全库存", "Below threshold"),
    ("movements", "出入库记录", "Movements"),
    ("roll_up", "按层级汇总", "Sum up under"),
    ("no_roll_up", "不汇总(逐项显示)", "Each place (no sum)"),
    ("show", "显示", "Show"),
    ("bundle_version", "当前定义版本", "Definitions version"),
    ("loaded_at", "加载时间", "Loaded"),
    ("reload", "重新加载定义", "Reload the definitions"),
    ("last_rejected", "最近一次未通过的加载", "Last rejected reload"),
    ("no_rejection", "最近没有未通过的加载。", "No reload was rejected."),
    ("versions", "历史版本", "Versions"),
    ("replay", "假设重放", "What-if replay"),
    (
        "replay_intro",
        "把过去的工单按修改后的定义重新判定一遍（不写入任何数据），看看哪些会被派给别的班组、哪些时限结果会不同、哪些操作会被拒绝。",
        "Decide past instances again under changed definitions (nothing is written) and see which would have gone to another team, met or missed a deadline differently, or been refused.",
    ),
    ("replay_dir", "待验证的定义目录（服务器上的路径）", "Candidate directory (a path on the server)"),
    ("replay_version", "或已保存的版本", "or a stored version"),
    ("replay_since", "最近天数（留空为全部）", "Last days (empty: all)"),
    ("replay_workflow", "流程（留空为全部）", "Workflow (empty: all)"),
    ("replay_run", "开始重放", "Replay"),
    (
        "replay_headline",
        "重放 {instances} 个实例（{steps} 个步骤），{affected} 个会有不同",
        "Replayed {instances} instance(s) ({steps} steps): {affected} would differ",
    ),
    ("replay_kinds", "差异类型", "Kinds of difference"),
    ("replay_moves", "班组变化", "Routing moves"),
    ("replay_by_team", "按原班组", "By recorded team"),
    ("replay_by_month", "按月份", "By month"),
    ("replay_first", "各实例第一个不同的步骤", "First differing step of each instance"),
    ("replay_more", "另有 {n} 处不同", "{n} more"),
    ("replay_truncated", "仅列出前 200 个", "Only the first 200 are listed"),
    ("replay_bad_since", "最近天数应为整数", "Last days must be a whole number"),
    ("replay_one_candidate", "请填写目录或选择版本（二选一）", "Give a directory or a version (one of them)"),
    (
        "replay_not_replayable",
        "{n} 个实例记录于系统保存决策依据之前，未能重放",
        "{n} instance(s) were recorded before events kept what their decisions read, and were not replayed",
    ),
    ("instances_count", "实例数", "Instances"),
    ("diagrams", "流程图", "Workflow diagrams"),
    ("outbox", "外发消息", "Outgoing messages"),
    ("dead_letters", "发送失败", "Dead letters"),
    ("retry", "重新发送", "Send again"),
    ("changes_since", "与当前版本的差异", "changes since"),
    ("queued_again", "已重新排队发送", "Queued to be sent again"),
    ("hint", "提示", "Hint"),
    ("reloaded", "已加载新版本", "New version loaded"),
    ("unchanged", "定义没有变化", "The definitions did not change"),
    ("rejected", "新定义有问题，仍使用上一版本", "The new definitions have problems; the last good version keeps serving"),
    ("not_found", "找不到该页面，或您无权查看。", "This page does not exist, or you may not see it."),
    ("forbidden", "您没有权限执行此操作。", "You may not do this."),
    ("error", "出错了", "Something went wrong"),
    ("back_home", "返回首页", "Back to the home page"),
    ("print_labels", "打印二维码标签", "Print QR labels"),
    ("start_for", "为此发起", "Start for this"),
    ("related", "相关工单", "Related work"),
    ("count", "数量", "Count"),
    ("file_too_large", "文件过大", "File too large"),
    ("signed", "已签名", "Signed"),
    ("filled_in", "根据所选记录自动填写", "Filled in from the chosen record"),
];

/// A movement kind of the engine's ledgers, in words.
pub fn movement(lang: Lang, kind: &str) -> String {
    let (zh, en) = match kind {
        "receive" => ("入库", "received"),
        "issue" => ("出库", "issued"),
        "reserve" => ("预留", "reserved"),
        "release" => ("释放预留", "released"),
        "issue_reserved" => ("预留出库", "issued (reserved)"),
        "adjust" => ("盘点调整", "adjusted"),
        "transfer_out" => ("调出", "transferred out"),
        "transfer_in" => ("调入", "transferred in"),
        "return" => ("退料", "returned"),
        other => (other, other),
    };
    (if lang == Lang::En { en } else { zh }).to_string()
}

/// One text in `lang`.
pub fn t(lang: Lang, key: &str) -> &'static str {
    TEXTS.iter().find(|(k, ..)| *k == key).map_or("", |(_, zh, en)| if lang == Lang::En { en } else { zh })
}

/// Every text in `lang`, for templates (`{{t.home}}`).
pub fn all(lang: Lang) -> Value {
    let m: Map<String, Value> = TEXTS.iter().map(|(k, zh, en)| (k.to_string(), Value::String((if lang == Lang::En { en } else { zh }).to_string()))).collect();
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    /// Regression: a second entry with the same key silently replaced the
    /// first in templates (the linked orders were titled "相关工单").
    #[test]
    fn every_key_is_given_once() {
        let mut keys: Vec<&str> = super::TEXTS.iter().map(|(k, ..)| *k).collect();
        keys.sort_unstable();
        let before = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), before, "a text key is given twice");
    }
}
