//! `GET /metrics`: Prometheus text exposition of per-session usage (the basis of consumption
//! accounting), live session counts, and each chat model's calls and tokens.
//!
//! Written by hand: the text format is a few lines per series, and a metrics registry crate would
//! have to be kept in sync with what `/health` already computes on demand.

use std::fmt::Write;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;

use berth_sandbox::Usage;

use crate::state::AppState;

/// One per-session series.
struct Series {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Usage) -> f64,
}

const SERIES: [Series; 6] = [
    Series {
        name: "berth_runtime_session_cpu_seconds_total",
        kind: "counter",
        help: "CPU time the session used (idle and I/O wait are free)",
        value: |u| u.cpu_seconds,
    },
    Series {
        name: "berth_runtime_session_memory_bytes",
        kind: "gauge",
        help: "Memory the session uses now",
        value: |u| u.memory_current_bytes as f64,
    },
    Series {
        name: "berth_runtime_session_memory_peak_bytes",
        kind: "gauge",
        help: "The session's peak memory",
        value: |u| u.memory_peak_bytes as f64,
    },
    Series {
        name: "berth_runtime_session_oom_kills_total",
        kind: "counter",
        help: "Processes the memory limit killed",
        value: |u| u.oom_kills as f64,
    },
    Series {
        name: "berth_runtime_session_pids_limit_hits_total",
        kind: "counter",
        help: "Forks refused by the process limit",
        value: |u| u.pids_limit_hits as f64,
    },
    Series {
        name: "berth_runtime_session_egress_denied_total",
        kind: "counter",
        help: "Connections the egress proxy refused",
        value: |u| u.egress_denied as f64,
    },
];

/// A per-model counter: name, help, and which total it reports.
type ModelSeries = (&'static str, &'static str, fn(&berth_models::UsageTotals) -> u64);

/// Escapes a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let reports = state
        .inner
        .services
        .runtime
        .as_ref()
        .map(|r| r.sessions().reports())
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "# HELP berth_runtime_sessions Live runtime sessions");
    let _ = writeln!(out, "# TYPE berth_runtime_sessions gauge");
    let _ = writeln!(out, "berth_runtime_sessions {}", reports.len());
    for series in SERIES {
        let name = series.name;
        let _ = writeln!(out, "# HELP {name} {}", series.help);
        let _ = writeln!(out, "# TYPE {name} {}", series.kind);
        for report in &reports {
            let _ = writeln!(
                out,
                "{name}{{agent_runtime_id=\"{}\",runtime_session_id=\"{}\",isolation=\"{}\"}} {}",
                label(&report.agent_runtime_id),
                label(&report.runtime_session_id),
                report.isolation,
                (series.value)(&report.usage),
            );
        }
    }
    let usage = state.inner.services.memory.model_usage();
    let model_series: [ModelSeries; 4] = [
        ("berth_model_calls_total", "Chat model calls", |u| u.calls),
        ("berth_model_failures_total", "Chat model calls that failed", |u| {
            u.failures
        }),
        (
            "berth_model_input_tokens_total",
            "Prompt tokens, as the provider counted them",
            |u| u.input_tokens,
        ),
        (
            "berth_model_output_tokens_total",
            "Answer tokens, as the provider counted them",
            |u| u.output_tokens,
        ),
    ];
    for (name, help, value) in model_series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (model, totals) in &usage {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", label(model), value(totals));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
