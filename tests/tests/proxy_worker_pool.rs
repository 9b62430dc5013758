//! The data plane end to end on the per-worker pool (`PoolKind::Worker`):
//! the same cases as `proxy.rs`.

use tollgate::proxy::PoolKind;

const POOL: PoolKind = PoolKind::Worker;

#[path = "common/proxy_cases.rs"]
mod cases;
