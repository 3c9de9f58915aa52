//! JSON over HTTP for the remote providers: one timeout per attempt, retries with exponential
//! backoff and jitter on the failures that retrying can fix (connection errors, timeouts, 408,
//! 409, 429 and 5xx), and `Retry-After` honoured when the server sends it.

use std::time::Duration;

use serde_json::Value;

use crate::ModelError;
use crate::chat::preview;

/// How a provider talks HTTP.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// For one attempt, from sending the request to reading the whole answer.
    pub timeout: Duration,
    /// Attempts after the first.
    pub max_retries: u32,
    /// The wait before the first retry; each later one doubles it, up to [`MAX_BACKOFF`].
    pub initial_backoff: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(60),
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// One client per provider: it keeps connections alive between calls.
pub(crate) fn client(settings: &HttpSettings) -> Result<reqwest::Client, ModelError> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| ModelError::Failed(format!("cannot build an HTTP client: {e}")))
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

fn backoff(settings: &HttpSettings, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(MAX_BACKOFF);
    }
    let exponential = settings
        .initial_backoff
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF);
    // Full jitter keeps many failed jobs from retrying in lockstep.
    exponential.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// Sends the request `build` makes (again for each attempt, so signatures are fresh) and
/// returns the JSON answer of the first successful attempt.
pub(crate) async fn send_json(
    settings: &HttpSettings,
    build: impl Fn() -> Result<reqwest::RequestBuilder, ModelError>,
) -> Result<Value, ModelError> {
    let mut attempt = 0;
    loop {
        let (error, retry_after) = match attempt_once(build()?).await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let retryable = match &error {
            ModelError::Timeout | ModelError::Transport(_) => true,
            ModelError::Http { status, .. } => retryable_status(*status),
            _ => false,
        };
        if !retryable || attempt >= settings.max_retries {
            return Err(error);
        }
        let wait = backoff(settings, attempt, retry_after);
        tracing::debug!(%error, attempt, ?wait, "model call failed; retrying");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

async fn attempt_once(request: reqwest::RequestBuilder) -> Result<Value, (ModelError, Option<Duration>)> {
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            ModelError::Timeout
        } else {
            ModelError::Transport(e.to_string())
        }
    };
    let response = request.send().await.map_err(|e| (transport(e), None))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.map_err(|e| (transport(e), None))?;
    if !(200..300).contains(&status) {
        return Err((
            ModelError::Http {
                status,
                message: preview(&body),
            },
            retry_after,
        ));
    }
    serde_json::from_str(&body).map_err(|e| {
        (
            ModelError::InvalidOutput(format!("the provider's answer is not JSON ({e}): {}", preview(&body))),
            None,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let settings = HttpSettings {
            initial_backoff: Duration::from_millis(100),
            ..HttpSettings::default()
        };
        for attempt in 0..4 {
            let wait = backoff(&settings, attempt, None);
            let full = Duration::from_millis(100 * (1 << attempt));
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
        assert_eq!(backoff(&settings, 30, None).max(MAX_BACKOFF), MAX_BACKOFF);
        assert_eq!(
            backoff(&settings, 0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn only_failures_that_retrying_can_fix_are_retried() {
        for status in [408, 409, 429, 500, 502, 503] {
            assert!(retryable_status(status), "{status}");
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(!retryable_status(status), "{status}");
        }
    }
}
