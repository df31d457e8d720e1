//! The one retry schedule of the service: exponential backoff from an initial delay,
//! doubling up to a maximum, with jitter (the `backon` crate), so that tasks and
//! instances that failed together do not retry in lockstep. Every retry loop (store
//! writes, Kafka produces, inputs the ingest flow retries) takes its delays from here.
//!
//! Invariant: the schedule never ends (the caller bounds attempts); each delay is at
//! least the current step (`initial`, doubled per attempt, at most `max`) and less than
//! twice it.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// The delays between attempts: `initial`, then doubling up to `max`, each with jitter.
pub fn delays(initial: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(initial)
        .with_max_delay(max.max(initial))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_with_jitter_and_never_end() {
        let ms = Duration::from_millis;
        let got: Vec<Duration> = delays(ms(100), ms(800)).take(50).collect();
        assert_eq!(got.len(), 50, "the schedule does not end");
        let steps = [100u64, 200, 400, 800];
        for (i, d) in got.iter().enumerate() {
            let step = ms(steps[i.min(3)]);
            assert!(*d >= step && *d < step * 2, "delay {i}: {d:?} outside [{step:?}, 2x)");
        }
        assert!(got.windows(2).any(|w| w[0] != w[1] && w[0] >= ms(800)), "jitter varies the delays at the cap");
    }
}
