//! Push rules: the spec's defaults per user until they change them; changes land in their
//! `m.push_rules` account data, so their other clients see them through `/sync`.

use axum::extract::State;
use ruma::api::client::push::{
    delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled, get_pushrules_all,
    get_pushrules_global_scope, set_pushrule, set_pushrule_actions, set_pushrule_enabled,
};
use ruma::push::{AnyPushRuleRef, InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset};

use crate::gateway::{Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::error::Error;
use crate::services::session::Session;

fn rules(state: &AppState, session: &Session) -> Result<Ruleset> {
    Ok(state.messaging.push_rules(&session.user_id)?)
}

fn not_found() -> Error {
    Error::not_found("Unknown push rule")
}

fn find<'a>(rules: &'a Ruleset, kind: &RuleKind, rule_id: &str) -> Result<AnyPushRuleRef<'a>> {
    Ok(rules.get(kind.clone(), rule_id).ok_or_else(not_found)?)
}

/// `GET /_matrix/client/v3/pushrules/` (and without the slash)
pub async fn get_all(
    State(state): State<AppState>,
    request: Ruma<get_pushrules_all::v3::Request>,
) -> Result<RumaResponse<get_pushrules_all::v3::Response>> {
    let rules = rules(&state, request.session()?)?;
    Ok(RumaResponse(get_pushrules_all::v3::Response::new(rules)))
}

/// `GET /_matrix/client/v3/pushrules/global/`
pub async fn get_global(
    State(state): State<AppState>,
    request: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<RumaResponse<get_pushrules_global_scope::v3::Response>> {
    let rules = rules(&state, request.session()?)?;
    Ok(RumaResponse(get_pushrules_global_scope::v3::Response::new(
        rules,
    )))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn get(
    State(state): State<AppState>,
    request: Ruma<get_pushrule::v3::Request>,
) -> Result<RumaResponse<get_pushrule::v3::Response>> {
    let rules = rules(&state, request.session()?)?;
    let body = &request.body;
    let rule = find(&rules, &body.kind, &body.rule_id)?.to_owned();
    Ok(RumaResponse(get_pushrule::v3::Response::new(rule.into())))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}` (`before`, `after`)
pub async fn set(
    State(state): State<AppState>,
    request: Ruma<set_pushrule::v3::Request>,
) -> Result<RumaResponse<set_pushrule::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let rule = body.rule.clone();
    let (before, after) = (body.before.as_deref(), body.after.as_deref());
    state
        .messaging
        .update_push_rules(&session.user_id, |rules| {
            rules.insert(rule, after, before).map_err(|e| match e {
                InsertPushRuleError::UnknownRuleId => Error::not_found(e.to_string()),
                other => Error::bad_json(other.to_string()),
            })
        })
        .await?;
    Ok(RumaResponse(set_pushrule::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`: user rules only.
pub async fn delete(
    State(state): State<AppState>,
    request: Ruma<delete_pushrule::v3::Request>,
) -> Result<RumaResponse<delete_pushrule::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    state
        .messaging
        .update_push_rules(&session.user_id, |rules| {
            rules
                .remove(body.kind.clone(), &body.rule_id)
                .map_err(|e| match e {
                    RemovePushRuleError::NotFound => not_found(),
                    other => Error::bad_json(other.to_string()),
                })
        })
        .await?;
    Ok(RumaResponse(delete_pushrule::v3::Response::new()))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn get_enabled(
    State(state): State<AppState>,
    request: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<get_pushrule_enabled::v3::Response>> {
    let rules = rules(&state, request.session()?)?;
    let body = &request.body;
    let enabled = find(&rules, &body.kind, &body.rule_id)?.enabled();
    Ok(RumaResponse(get_pushrule_enabled::v3::Response::new(
        enabled,
    )))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn set_enabled(
    State(state): State<AppState>,
    request: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<set_pushrule_enabled::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    state
        .messaging
        .update_push_rules(&session.user_id, |rules| {
            rules
                .set_enabled(body.kind.clone(), &body.rule_id, body.enabled)
                .map_err(|_| not_found())
        })
        .await?;
    Ok(RumaResponse(set_pushrule_enabled::v3::Response::new()))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn get_actions(
    State(state): State<AppState>,
    request: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<get_pushrule_actions::v3::Response>> {
    let rules = rules(&state, request.session()?)?;
    let body = &request.body;
    let actions = find(&rules, &body.kind, &body.rule_id)?.actions().to_vec();
    Ok(RumaResponse(get_pushrule_actions::v3::Response::new(
        actions,
    )))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn set_actions(
    State(state): State<AppState>,
    request: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<set_pushrule_actions::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let actions = body.actions.clone();
    state
        .messaging
        .update_push_rules(&session.user_id, |rules| {
            rules
                .set_actions(body.kind.clone(), &body.rule_id, actions)
                .map_err(|_| not_found())
        })
        .await?;
    Ok(RumaResponse(set_pushrule_actions::v3::Response::new()))
}
