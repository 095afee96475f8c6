//! `GET /` (readiness probe) and `/api/status` (health and real counters).

use serde_json::{json, Value};

use super::{round3, App};

/// The readiness probe body: the host only needs an answer; `ready` is informative.
pub fn probe(app: &App) -> String {
    json!({"service": "prepis", "ready": ready(app)}).to_string()
}

/// Requests can be served: the model is loaded and the instance is not shutting down.
fn ready(app: &App) -> bool {
    app.inference.status().ready && !app.lifecycle.draining()
}

/// The status report.
pub fn report(app: &App) -> Value {
    let model = app.inference.status();
    let metrics = app.metrics.snapshot();
    let (workers, capacity) = app.inference.limits();
    let supervision = app.inference.supervision();
    json!({
        "service": "prepis",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": "stateless",
        "replica_friendly": true,
        "ready": model.ready && !app.lifecycle.draining(),
        "draining": app.lifecycle.draining(),
        "endpoints": [
            "POST /api/transcribe",
            "GET /api/status",
            "POST /v1/audio/transcriptions",
            "POST /v1/audio/translations",
            "GET /v1/models",
        ],
        "model": {
            "name": model.info.as_ref().map_or(app.config.model.as_str(), |i| i.name.as_str()),
            "loaded": model.ready,
            "size_bytes": model.info.as_ref().map(|i| i.size_bytes),
            "engine": model.info.as_ref().map(|i| i.engine.clone()),
            "multilingual": model.info.as_ref().map(|i| i.multilingual),
            "error": model.error,
        },
        "speakers": match &app.speaker {
            None => json!({"enabled": false, "loaded": false, "error": null}),
            Some(Ok(_)) => json!({"enabled": true, "loaded": true, "model": "GE2E (resemblyzer 0.1.4)", "error": null}),
            Some(Err(e)) => json!({"enabled": true, "loaded": false, "error": e}),
        },
        "inference": {
            "workers": workers,
            "threads_per_worker": app.config.threads_per_inference,
            "capacity": capacity,
            "in_flight": app.inference.in_flight(),
            "isolation": if app.config.isolate_engine { "process" } else { "thread" },
            "crash_marker": cfg!(feature = "crash-marker"),
            "crashes": supervision.crashes,
            "restarts": supervision.restarts,
            "slots": supervision.slots,
        },
        "uptime_seconds": round3(metrics.uptime_seconds),
        "requests_served": metrics.requests_served,
        "requests_failed": metrics.requests_failed,
        "audio_seconds_transcribed": round3(metrics.audio_seconds_transcribed),
        "processing_ms_mean": metrics.processing_ms_mean.map(round3),
        "processing_ms_p95": metrics.processing_ms_p95.map(round3),
    })
}
