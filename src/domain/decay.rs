//! Freshness decay `0.5 ^ (age / half_life)` in fixed point, without floating-point
//! `powf`, so every platform and libm gives the same ppm (CONSENSUS.md "freshness").
//!
//! Method: `age / half_life = n + f` with `n` an integer and `f` in [0, 1) taken to 32
//! binary digits (`f = sum b_i 2^-i`). Then `0.5^(n+f) = 2^-n * prod_{b_i = 1} 2^(-2^-i)`:
//! the 32 constants `2^(-2^-i)` are precomputed to 62 fractional bits (with Python's
//! `decimal` at 60 digits, rounded to nearest), multiplied in `u128` (each product
//! truncated to 62 bits), shifted right by `n`, and rounded half up to ppm. The error
//! is below 10^-9 before the final rounding, so the result equals the exactly rounded
//! ppm except when the true value lies within 10^-9 ppm of a rounding boundary.
//!
//! Invariant: integer arithmetic only; monotone non-increasing in the age; 1,000,000
//! for an age <= 0.

use super::trust::PPM;

/// `2^(-2^-i) * 2^62` for i = 1..=32, rounded to nearest.
const POW2_NEG_FRAC: [u64; 32] = [
    0x2d413cccfe779921,
    0x35d13f32b5a75abd,
    0x3ab031b9f7490e4c,
    0x3d495f454921b30b,
    0x3ea0ecb6dc8a80cf,
    0x3f4f83033d21b05d,
    0x3fa784571ee3e213,
    0x3fd3b2d65447b229,
    0x3fe9d59487236bb4,
    0x3ff4e9d4703df843,
    0x3ffa74acbdf6c9d5,
    0x3ffd3a46ffc6e30f,
    0x3ffe9d1fa8010199,
    0x3fff4e8ede053ad5,
    0x3fffa747318376ac,
    0x3fffd3a38961e6ff,
    0x3fffe9d1c0d8fd14,
    0x3ffff4e8df7680c5,
    0x3ffffa746f7dc0ec,
    0x3ffffd3a37af8098,
    0x3ffffe9d1bd3e854,
    0x3fffff4e8de8fe2c,
    0x3fffffa746f44197,
    0x3fffffd3a37a116b,
    0x3fffffe9d1bd04de,
    0x3ffffff4e8de8179,
    0x3ffffffa746f407f,
    0x3ffffffd3a37a030,
    0x3ffffffe9d1bd014,
    0x3fffffff4e8de809,
    0x3fffffffa746f404,
    0x3fffffffd3a37a02,
];

const ONE_Q62: u128 = 1 << 62;

/// Half-life from the policy knob (days, a float read from configuration) to whole
/// seconds, at least 1. `f64` multiplication and rounding are exact IEEE 754 operations,
/// identical on every platform.
pub fn half_life_seconds(half_life_days: f64) -> u64 {
    let s = (half_life_days * 86_400.0).round();
    if s.is_nan() || s < 1.0 {
        1
    } else if s >= u64::MAX as f64 {
        u64::MAX
    } else {
        s as u64
    }
}

/// `0.5 ^ (age_nanos / half_life_nanos)` in ppm (1,000,000 when `age_nanos <= 0`).
pub fn decay_ppm(age_nanos: i128, half_life_seconds: u64) -> u64 {
    if age_nanos <= 0 {
        return PPM;
    }
    let age = age_nanos as u128;
    let hl = half_life_seconds.max(1) as u128 * 1_000_000_000;
    let n = age / hl;
    if n >= 62 {
        return 0;
    }
    let rem = age % hl;
    // f in Q32; rem < hl < 2^94, so rem << 32 < 2^126.
    let f = ((rem << 32) / hl) as u64;
    let mut v: u128 = ONE_Q62;
    for (i, c) in POW2_NEG_FRAC.iter().enumerate() {
        if f & (1u64 << (31 - i)) != 0 {
            v = (v * *c as u128) >> 62;
        }
    }
    v >>= n;
    ((v * PPM as u128 + (ONE_Q62 / 2)) >> 62) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i128 = 86_400 * 1_000_000_000;

    /// Pinned values, each equal to `round(0.5 ^ (days / 90) * 10^6)` computed exactly
    /// (Python `decimal`, 50 digits).
    #[test]
    fn pinned_values_across_the_range() {
        let hl = half_life_seconds(90.0);
        assert_eq!(hl, 7_776_000);
        let cases: [(i128, u64); 14] = [
            (0, 1_000_000),
            (-5 * DAY, 1_000_000),
            (1, 1_000_000),
            (DAY, 992_328),
            (7 * DAY, 947_516),
            (30 * DAY, 793_701),
            (45 * DAY, 707_107),
            (60 * DAY, 629_961),
            (90 * DAY, 500_000),
            (100 * DAY, 462_937),
            (180 * DAY, 250_000),
            (365 * DAY, 60_139),
            (1000 * DAY, 452),
            (3650 * DAY, 0),
        ];
        for (age, want) in cases {
            assert_eq!(decay_ppm(age, hl), want, "age {} days", age as f64 / DAY as f64);
        }
        assert_eq!(decay_ppm(62 * 90 * DAY, hl), 0);
    }

    #[test]
    fn monotone_and_half_at_each_half_life() {
        let hl = half_life_seconds(1.0);
        let mut last = PPM;
        for h in 0..2_000 {
            let v = decay_ppm(h * DAY / 100, hl);
            assert!(v <= last, "not monotone at {h}");
            last = v;
        }
        for k in 0..20u32 {
            assert_eq!(decay_ppm(k as i128 * DAY, hl), (PPM as f64 / 2f64.powi(k as i32)).round() as u64);
        }
    }
}
