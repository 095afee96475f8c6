//! Service counters and processing-time statistics since start, for `/api/status`.
//! Constant memory: times go into a log-spaced histogram (about 5 % resolution).

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Histogram buckets: bucket i holds times up to `BASE_MS * GROWTH^i`.
const BUCKETS: usize = 256;
const BASE_MS: f64 = 0.1;
const GROWTH: f64 = 1.05;

/// Counters shared by all requests.
pub struct Metrics {
    started: Instant,
    inner: Mutex<Counters>,
}

struct Counters {
    served: u64,
    failed: u64,
    audio_seconds: f64,
    processing_ms_total: f64,
    processing_histogram: [u64; BUCKETS],
    /// Processing seconds per audio second of long requests, a moving average.
    speed: Option<f64>,
}

/// Requests this long (seconds of audio) or longer measure the speed of long requests.
const SPEED_MIN_AUDIO_SECONDS: f64 = 10.0;
/// The speed assumed before any long request was measured (Whisper base on 2 cores takes
/// ~0.1 s per audio second: this is slow on purpose).
const SPEED_BEFORE_MEASURING: f64 = 0.5;

/// A point-in-time copy for the status endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    pub uptime_seconds: f64,
    pub requests_served: u64,
    pub requests_failed: u64,
    pub audio_seconds_transcribed: f64,
    pub processing_ms_mean: Option<f64>,
    pub processing_ms_p95: Option<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            inner: Mutex::new(Counters {
                served: 0,
                failed: 0,
                audio_seconds: 0.0,
                processing_ms_total: 0.0,
                processing_histogram: [0; BUCKETS],
                speed: None,
            }),
        }
    }
}

impl Metrics {
    /// Records a transcription request answered with 2xx.
    pub fn record_success(&self, audio_seconds: f64, processing_ms: f64) {
        let mut c = self.lock();
        c.served += 1;
        c.audio_seconds += audio_seconds;
        c.processing_ms_total += processing_ms;
        c.processing_histogram[bucket(processing_ms)] += 1;
        if audio_seconds >= SPEED_MIN_AUDIO_SECONDS {
            let speed = processing_ms / 1000.0 / audio_seconds;
            c.speed = Some(c.speed.map_or(speed, |before| 0.7 * before + 0.3 * speed));
        }
    }

    /// Seconds a request of `audio_seconds` is expected to take, by recent long requests.
    pub fn expected_seconds(&self, audio_seconds: f64) -> f64 {
        audio_seconds * self.lock().speed.unwrap_or(SPEED_BEFORE_MEASURING)
    }

    /// Records a transcription request answered with an error.
    pub fn record_failure(&self) {
        self.lock().failed += 1;
    }

    /// Current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = self.lock();
        let mean = (c.served > 0).then(|| c.processing_ms_total / c.served as f64);
        MetricsSnapshot {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            requests_served: c.served,
            requests_failed: c.failed,
            audio_seconds_transcribed: c.audio_seconds,
            processing_ms_mean: mean,
            processing_ms_p95: quantile(&c.processing_histogram, 0.95),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn bucket(ms: f64) -> usize {
    if ms <= BASE_MS {
        return 0;
    }
    ((ms / BASE_MS).ln() / GROWTH.ln())
        .ceil()
        .min((BUCKETS - 1) as f64) as usize
}

fn quantile(histogram: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(BASE_MS * GROWTH.powi(i as i32));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_p95_follow_the_recorded_times() {
        let m = Metrics::default();
        assert_eq!(m.snapshot().processing_ms_p95, None);
        for i in 1..=100 {
            m.record_success(2.0, i as f64 * 10.0);
        }
        m.record_failure();
        let s = m.snapshot();
        assert_eq!(s.requests_served, 100);
        assert_eq!(s.requests_failed, 1);
        assert_eq!(s.audio_seconds_transcribed, 200.0);
        assert!((s.processing_ms_mean.unwrap() - 505.0).abs() < 1e-9);
        let p95 = s.processing_ms_p95.unwrap();
        assert!((950.0..=1000.0).contains(&p95), "p95 {p95}");
    }

    #[test]
    fn long_requests_measure_the_expected_time() {
        let m = Metrics::default();
        assert_eq!(m.expected_seconds(100.0), 100.0 * SPEED_BEFORE_MEASURING);
        m.record_success(2.0, 5_000.0); // a short chunk says nothing about long requests
        assert_eq!(m.expected_seconds(100.0), 100.0 * SPEED_BEFORE_MEASURING);
        m.record_success(60.0, 6_000.0);
        assert!((m.expected_seconds(100.0) - 10.0).abs() < 1e-9);
        m.record_success(60.0, 60_000.0);
        assert!((m.expected_seconds(100.0) - 37.0).abs() < 1e-9);
    }
}
