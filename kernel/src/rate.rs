//! Token buckets: how the kernel bounds the rate at which a VM may use a
//! resource whose cost is not memory (console output).

/// Tokens that refill at a fixed rate up to a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    tokens: u64,
    /// Global-clock time of the last refill, in ns.
    refilled: u64,
}

impl TokenBucket {
    /// A bucket holding `burst` tokens at time `now`.
    pub const fn full(burst: u64, now: u64) -> TokenBucket {
        TokenBucket { tokens: burst, refilled: now }
    }

    /// Takes up to `want` tokens at time `now` (ns), the bucket having
    /// refilled at `per_second` tokens a second, up to `burst`, since it
    /// was last used. Returns how many it took.
    pub fn take(&mut self, now: u64, want: u64, per_second: u64, burst: u64) -> u64 {
        let elapsed = now.saturating_sub(self.refilled);
        let earned = (u128::from(elapsed) * u128::from(per_second) / 1_000_000_000) as u64;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(burst);
            // Keep the fraction of a token not yet earned.
            let used_ns = (u128::from(earned) * 1_000_000_000 / u128::from(per_second.max(1))) as u64;
            self.refilled = if self.tokens == burst { now } else { self.refilled + used_ns };
        }
        let taken = want.min(self.tokens);
        self.tokens -= taken;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = 1000;
    const BURST: u64 = 100;

    #[test]
    fn a_burst_then_the_rate() {
        let mut bucket = TokenBucket::full(BURST, 0);
        assert_eq!(bucket.take(0, 150, RATE, BURST), 100);
        assert_eq!(bucket.take(0, 10, RATE, BURST), 0);
        // 1 ms later: one token.
        assert_eq!(bucket.take(1_000_000, 10, RATE, BURST), 1);
        // A second later: the burst again, not more.
        assert_eq!(bucket.take(2_000_000_000, 1000, RATE, BURST), 100);
    }

    #[test]
    fn many_small_takes_earn_the_same_as_one_large() {
        let mut bucket = TokenBucket::full(BURST, 0);
        bucket.take(0, BURST, RATE, BURST);
        let mut taken = 0;
        for step in 1..=1000u64 {
            taken += bucket.take(step * 300_000, 1, RATE, BURST);
        }
        // 300 ms at 1000 a second: 300 tokens, every one taken.
        assert_eq!(taken, 300);
    }
}
