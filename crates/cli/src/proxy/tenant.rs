//! A tenant at run time: its settings, its own rate limits, and what it did.
//!
//! A tenant's requests and tokens per minute are kept by a rate-limit store of its own (the
//! same GCRA the stack's limiter uses, one scope). A call takes one request and its token
//! estimate (the prompt and `max_tokens`) before it goes into the stack, or is refused at once
//! with the wait; when its answer ends, the estimate is replaced by the usage the provider
//! reported, and given back when nothing was used (a cached answer, a refusal).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tollgate::ratelimit::{
    Charges, MemoryScope, MemoryStore, QuotaTable, Quotas, Refusal, ScopeMatch, Store as _,
};
use tollgate_core::{CredentialId, Provider, Scope, Usage};

use super::config::Tenant;

/// A tenant, its limits and its counts.
#[derive(Debug)]
pub(crate) struct TenantState {
    pub(crate) tenant: Tenant,
    limits: Option<(MemoryStore, Arc<MemoryScope>)>,
    /// Calls it made.
    pub(crate) requests: AtomicU64,
    /// Calls its own limits refused (requests or tokens a minute, calls in flight).
    pub(crate) limited: AtomicU64,
    /// Calls refused because it may not call the model.
    pub(crate) forbidden: AtomicU64,
}

/// A call's charge on its tenant's limits, settled when its answer ends (or released when
/// dropped unsettled).
pub(crate) struct TenantCharge {
    store: MemoryStore,
    scope: Arc<MemoryScope>,
    charges: Charges,
    settled: bool,
}

impl TenantState {
    pub(crate) fn new(tenant: Tenant) -> Self {
        let limits = tenant.limited().then(|| {
            let quotas = Quotas {
                requests_per_minute: tenant.requests_per_minute,
                tokens_per_minute: tenant.tokens_per_minute,
                ..Quotas::unlimited()
            };
            let store = MemoryStore::new(
                QuotaTable::new(Quotas::unlimited()).with(ScopeMatch::any(), quotas),
            )
            .with_max_scopes(1);
            let scope = Scope::new(Provider::OpenAiCompatible)
                .with_credential(Some(CredentialId::named(format!("tenant-{}", tenant.name))));
            let scope = store.scope(&scope, Instant::now());
            (store, scope)
        });
        Self {
            tenant,
            limits,
            requests: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
        }
    }

    /// Takes one request of `input` and `output` tokens (estimates) from the tenant's limits;
    /// the wait until it would fit when it does not now. `None`: the tenant has no limits.
    pub(crate) async fn admit(
        &self,
        input: u64,
        output: u64,
    ) -> Result<Option<TenantCharge>, Duration> {
        let Some((store, scope)) = &self.limits else {
            return Ok(None);
        };
        let charges = if self.tenant.tokens_per_minute.is_some() {
            Charges::request(input, output)
        } else {
            Charges::request(0, 0)
        };
        let now = Instant::now();
        match store.reserve(scope, charges, now, Duration::ZERO).await {
            Ok(_) => Ok(Some(TenantCharge {
                store: store.clone(),
                scope: scope.clone(),
                charges,
                settled: false,
            })),
            Err(refusal) => {
                self.limited.fetch_add(1, Ordering::Relaxed);
                Err(match refusal {
                    Refusal::Wait { wait, .. } => wait,
                    // A call larger than a minute's tokens: it never fits; say a minute.
                    Refusal::Never { .. } => Duration::from_secs(60),
                })
            }
        }
    }
}

impl TenantCharge {
    /// The call ended having used `usage` (`None`: nothing the provider counted): the token
    /// estimate is replaced by it.
    pub(crate) fn settle(mut self, usage: Option<Usage>) {
        self.settled = true;
        let reserved = self.charges.tokens_only();
        let used = usage.map_or(Charges::ZERO, |u| {
            Charges::request(u.input_tokens, u.output_tokens).tokens_only()
        });
        let used = if reserved.is_zero() {
            Charges::ZERO
        } else {
            used
        };
        self.store
            .charge(&self.scope, used.saturating_sub(reserved));
        self.store
            .release(&self.scope, reserved.saturating_sub(used));
    }
}

impl Drop for TenantCharge {
    fn drop(&mut self) {
        if !self.settled {
            self.store.release(&self.scope, self.charges.tokens_only());
        }
    }
}

impl std::fmt::Debug for TenantCharge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCharge")
            .field("charges", &self.charges)
            .finish_non_exhaustive()
    }
}

/// Every tenant's settings and counts, as `/admin/health` shows them (never a key).
pub(crate) fn tenants_json(routes: &super::routes::Routes) -> serde_json::Value {
    let tenants = routes.tenants.iter().enumerate().filter_map(|(key, t)| {
        let state = t.as_ref()?;
        let tenant = &state.tenant;
        Some(serde_json::json!({
            "name": tenant.name,
            "priority": tenant.priority.as_str(),
            "models": tenant.models,
            "requests_per_minute": tenant.requests_per_minute,
            "tokens_per_minute": tenant.tokens_per_minute,
            "max_in_flight": routes.shares.max(key),
            "in_flight": routes.shares.in_flight(key),
            "requests": state.requests.load(Ordering::Relaxed),
            "refused_by_its_limits": state.limited.load(Ordering::Relaxed),
            "refused_models": state.forbidden.load(Ordering::Relaxed),
        }))
    });
    serde_json::Value::Array(tenants.collect())
}

/// Appends each tenant's counts to the Prometheus text, labelled by its name (never its key):
/// `tollgate_tenant_requests_total`, `tollgate_tenant_refusals_total{reason}` and
/// `tollgate_tenant_in_flight`.
pub(crate) fn write_tenant_metrics(text: &mut String, routes: &super::routes::Routes) {
    use std::fmt::Write as _;
    let tenants: Vec<(usize, &TenantState)> = routes
        .tenants
        .iter()
        .enumerate()
        .filter_map(|(key, t)| Some((key, t.as_deref()?)))
        .collect();
    if tenants.is_empty() {
        return;
    }
    let _ = writeln!(
        text,
        "# HELP tollgate_tenant_requests_total Calls a tenant made through the gateway.\n\
         # TYPE tollgate_tenant_requests_total counter"
    );
    for (_, t) in &tenants {
        let _ = writeln!(
            text,
            "tollgate_tenant_requests_total{{tenant=\"{}\"}} {}",
            t.tenant.name,
            t.requests.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        text,
        "# HELP tollgate_tenant_refusals_total Calls of a tenant the gateway refused: over its \
         own limits, or to a model it may not call.\n\
         # TYPE tollgate_tenant_refusals_total counter"
    );
    for (_, t) in &tenants {
        for (reason, count) in [("limits", &t.limited), ("model", &t.forbidden)] {
            let _ = writeln!(
                text,
                "tollgate_tenant_refusals_total{{tenant=\"{}\",reason=\"{reason}\"}} {}",
                t.tenant.name,
                count.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP tollgate_tenant_in_flight A tenant's calls in flight now.\n\
         # TYPE tollgate_tenant_in_flight gauge"
    );
    for (key, t) in &tenants {
        let _ = writeln!(
            text,
            "tollgate_tenant_in_flight{{tenant=\"{}\"}} {}",
            t.tenant.name,
            routes.shares.in_flight(*key)
        );
    }
}
