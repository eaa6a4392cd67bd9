//! Tracing set-up: pretty or JSON lines, filtered by `log.level` (or `RUST_LOG`).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::context::AppContext;

use crate::config::{LogFormat, LogSettings};

pub fn init(settings: &LogSettings) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let acceptor = tracing_subscriber::filter::filter_fn(|meta| {
        keep(meta.target(), LISTENER_CLOSED.load(Ordering::Relaxed))
    });
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(acceptor)
            .try_init(),
        LogFormat::Pretty => builder.finish().with(acceptor).try_init(),
    };
}

/// Set once shutdown has closed the listening socket on purpose.
static LISTENER_CLOSED: AtomicBool = AtomicBool::new(false);

/// Shutdown closes the listening socket itself (so new connections go elsewhere at once) while the
/// acceptor thread may not yet have taken in the pause before it: the acceptor then reports that
/// socket's `accept` and deregistration failing, at ERROR, on every deploy. From here on those reports
/// are about the closing this process did, not errors, and are left out of the log.
pub fn listener_closed_on_purpose() {
    LISTENER_CLOSED.store(true, Ordering::Relaxed);
    tracing::info!("stopped accepting connections");
}

/// Whether an event of `target` is logged: everything but the acceptor's complaints about a listener
/// shutdown closed.
fn keep(target: &str, listener_closed: bool) -> bool {
    !(listener_closed && target.starts_with("actix_server::accept"))
}

/// Every request runs in a `request` span carrying its id (the caller's sane `X-Request-Id`, or a new
/// one, echoed back) and, once routed, its route pattern — never the raw path, which can hold a table
/// token. A sampled fraction of requests (`log.request_sample`) is logged at info; server errors always
/// are, at warn.
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let sample = req
        .app_data::<web::Data<AppContext>>()
        .map_or(0.0, |ctx| ctx.settings.log.request_sample);
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), route = tracing::field::Empty);
    let started = std::time::Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    span.record("route", route.as_str());
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), v);
    }
    let status = res.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        span.in_scope(|| tracing::warn!(status, elapsed_ms, "request failed"));
    } else if sample > 0.0 && rand::random::<f64>() < sample {
        span.in_scope(|| tracing::info!(status, elapsed_ms, "request"));
    }
    Ok(res)
}

const REQUEST_ID: &str = "x-request-id";

#[cfg(test)]
mod tests {
    use super::keep;

    #[test]
    fn the_acceptor_is_quiet_only_once_shutdown_closed_its_listener() {
        assert!(
            keep("actix_server::accept", false),
            "accept errors in service are errors"
        );
        assert!(!keep("actix_server::accept", true));
        assert!(keep("actix_server::server", true));
        assert!(keep("scan2order::startup", true));
    }
}
