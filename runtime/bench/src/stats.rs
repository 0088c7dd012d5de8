//! The two summaries every workload prints: the median of its rounds and
//! their spread.

use std::time::Duration;

/// The median of `xs` (the upper one of an even count). Panics on an empty
/// slice: every caller measures at least one round.
pub fn median<T: Copy + PartialOrd>(xs: &[T]) -> T {
    let mut sorted = xs.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted[sorted.len() / 2]
}

/// How far apart the rounds are: (max − min) / min, in percent.
pub fn spread(xs: &[Duration]) -> f64 {
    let min = xs.iter().min().copied().unwrap_or_default().as_secs_f64();
    let max = xs.iter().max().copied().unwrap_or_default().as_secs_f64();
    if min > 0.0 {
        (max - min) / min * 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_of_the_sorted_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4, 1, 3, 2]), 3);
        assert_eq!(
            median(&[Duration::from_millis(9), Duration::from_millis(1)]),
            Duration::from_millis(9)
        );
    }

    #[test]
    fn spread_is_relative_to_the_fastest_round() {
        let xs = [Duration::from_millis(100), Duration::from_millis(150)];
        assert!((spread(&xs) - 50.0).abs() < 1e-9);
        assert_eq!(spread(&[]), 0.0);
    }
}
