//! `GET /v1/rollouts`: each rollout the tracked version declares, its selector,
//! candidate, state, the instances it picks and their answers (ARCHITECTURE.md §6.3).
//! Scoped: a token sees a rollout only if it may read every pair the rollout names.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use confhub_client::wire::{
    ErrorBody, RolloutHalt, RolloutInfo, RolloutSelector, RolloutsResponse,
};

use super::extract::Caller;
use super::{store, ApiError, AppState};
use crate::store::rollouts::Rollout;
use crate::timefmt::rfc3339_of;

pub(super) async fn rollouts(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
) -> Result<Json<RolloutsResponse>, ApiError> {
    let store = store(&state)?;
    let snap = store.snapshot();
    let rollouts = store.rollouts();
    let readable = |pairs: &[(String, String)]| {
        (principal.is_admin() || !pairs.is_empty())
            && pairs
                .iter()
                .all(|(s, e)| snap.may_read(&principal, s, e).is_ok())
    };
    let mut out: Vec<RolloutInfo> = rollouts
        .list
        .iter()
        .filter(|r| readable(&pairs_of(r)))
        .map(|r| info(&state, r))
        .collect();
    for refused in rollouts.refused.iter().filter(|d| readable(&d.pairs)) {
        out.push(RolloutInfo {
            name: refused.name.clone().unwrap_or_default(),
            service: refused
                .pairs
                .first()
                .map(|p| p.0.clone())
                .unwrap_or_default(),
            envs: refused.pairs.iter().map(|p| p.1.clone()).collect(),
            label: String::new(),
            to: RolloutSelector::default(),
            halt_on_reject: true,
            state: "broken".into(),
            candidate_version: None,
            candidate_digests: Default::default(),
            halt: None,
            errors: vec![refused.error.to_body()],
            instances: Vec::new(),
            applied: 0,
            rejected: 0,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(RolloutsResponse { rollouts: out }))
}

fn pairs_of(r: &Rollout) -> Vec<(String, String)> {
    r.spec
        .envs
        .iter()
        .map(|e| (r.spec.service.clone(), e.clone()))
        .collect()
}

fn info(state: &AppState, r: &Rollout) -> RolloutInfo {
    let spec = &r.spec;
    let (applied, rejected) = r.answers();
    let candidate = r.candidate.as_ref().ok();
    let pairs = pairs_of(r);
    RolloutInfo {
        name: spec.name.clone(),
        service: spec.service.clone(),
        envs: spec.envs.clone(),
        label: spec.label.clone(),
        to: RolloutSelector {
            percent: spec.to.percent,
            instances: spec.to.instances.clone(),
            labels: spec.to.labels.clone(),
        },
        halt_on_reject: spec.halt_on_reject,
        state: r.state().into(),
        candidate_version: candidate.map(|c| c.version.clone()),
        candidate_digests: candidate
            .map(|c| {
                c.entries
                    .iter()
                    .map(|(env, e)| (env.clone(), e.digest().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        halt: r.halted().map(|h| RolloutHalt {
            instance: h.instance.clone(),
            error: h.error.clone(),
            at: rfc3339_of(h.at),
        }),
        errors: match &r.candidate {
            Err(errors) => errors
                .iter()
                .map(|e| e.to_body())
                .collect::<Vec<ErrorBody>>(),
            Ok(_) => Vec::new(),
        },
        instances: state
            .core
            .instances
            .picked(&pairs, |id, labels| spec.selects(id, |k| labels.get(k))),
        applied,
        rejected,
    }
}
