//! The clock port: the service's one wall clock. Everything that stamps a time (arrival
//! of a document, a durable write, a verification, an export job, a trust audit entry)
//! reads it here, so a test can fix it and there is one definition of "now".
//!
//! Invariant: milliseconds since the Unix epoch, UTC; a clock before the epoch reads 0.

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// Milliseconds since the Unix epoch, read from the system clock ([`SystemClock`]).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_milliseconds_since_the_epoch() {
        let before = now_ms();
        let read = SystemClock.now_ms();
        // 2020-01-01 in ms: a clock in seconds or microseconds would fail this.
        assert!(read >= before && read > 1_577_836_800_000 && read < 10_000_000_000_000, "{read}");
    }
}
