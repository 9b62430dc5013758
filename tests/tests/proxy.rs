//! The data plane end to end on hyper-util's pooled client, the default
//! pool. The cases are shared with `proxy_worker_pool.rs`.

use tollgate::proxy::PoolKind;

const POOL: PoolKind = PoolKind::HyperUtil;

#[path = "common/proxy_cases.rs"]
mod cases;
