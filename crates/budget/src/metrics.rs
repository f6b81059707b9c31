//! What the layer records through the `metrics` facade (feature `metrics`):
//!
//! - `tollgate_spend_usd_total{tenant, provider, model}`: dollars charged, a gauge only ever
//!   increased (the facade's counters count integers); `tenant` is a tenant named by a
//!   configured budget, `other` for any other tenant, `none` without one; `model` through
//!   [`model_labels`](tollgate_core::model_labels::model_labels), so labels stay bounded;
//! - `tollgate_budget_refusals_total{budget}`: calls refused;
//! - `tollgate_budget_remaining_usd{budget}`: limit − spent − reserved, for dollar budgets;
//! - `tollgate_budget_soft_threshold_total{budget}`: soft-threshold crossings.

#[cfg(feature = "metrics")]
mod on {
    use tollgate_core::Provider;
    use tollgate_core::model_labels::model_labels;

    use crate::Usd;

    pub(crate) fn spend(tenant: &str, provider: Provider, model: Option<&str>, usd: Usd) {
        let model = model.map_or("", |m| model_labels().label(m)).to_owned();
        metrics::gauge!(
            "tollgate_spend_usd_total",
            "tenant" => tenant.to_owned(),
            "provider" => provider.as_str(),
            "model" => model,
        )
        .increment(usd.as_dollars_f64());
    }

    pub(crate) fn refused(budget: &str) {
        metrics::counter!("tollgate_budget_refusals_total", "budget" => budget.to_owned())
            .increment(1);
    }

    pub(crate) fn remaining(budget: &str, usd: Usd) {
        metrics::gauge!("tollgate_budget_remaining_usd", "budget" => budget.to_owned())
            .set(usd.as_dollars_f64());
    }

    pub(crate) fn soft_threshold(budget: &str) {
        metrics::counter!("tollgate_budget_soft_threshold_total", "budget" => budget.to_owned())
            .increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod on {
    use tollgate_core::Provider;

    use crate::Usd;

    pub(crate) fn spend(_: &str, _: Provider, _: Option<&str>, _: Usd) {}
    pub(crate) fn refused(_: &str) {}
    pub(crate) fn remaining(_: &str, _: Usd) {}
    pub(crate) fn soft_threshold(_: &str) {}
}

pub(crate) use on::*;
