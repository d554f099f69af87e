//! Who may read an instance: the workflow's `visible_to` (or the default:
//! requester, assignee, team), and admins always. Pure: the store uses the
//! same answer through [`flowform_store`'s `Visibility`] for index-backed
//! lists.

use crate::{Actor, Instance};
use flowform_model::{Audience, WorkflowDef};

/// Whether `actor` may read `instance` of `wf`.
pub fn visible(wf: &WorkflowDef, instance: &Instance, actor: &Actor) -> bool {
    actor.has_role("admin") || wf.audiences().iter().any(|a| reaches(a, instance, actor))
}

fn reaches(audience: &Audience, i: &Instance, actor: &Actor) -> bool {
    match audience {
        Audience::Requester => i.requester == actor.id,
        Audience::Assignee => i.assignment.assignee.as_deref() == Some(actor.id.as_str()),
        Audience::Team => i.assignment.team.as_ref().is_some_and(|t| actor.teams.contains(t)),
        Audience::Department => i.requester_department.is_some() && i.requester_department == actor.department,
        Audience::Role(role) => actor.has_role(role),
    }
}

/// Whether `actor` sees every instance of `wf` (a role in `visible_to`, or admin).
pub fn sees_all(wf: &WorkflowDef, actor: &Actor) -> bool {
    actor.has_role("admin") || wf.audiences().iter().any(|a| matches!(a, Audience::Role(r) if actor.has_role(r)))
}
