//! Randomness, seedable: jitter and sampling draw from [`Rng`] so that tests are repeatable.

use rand::{RngExt as _, SeedableRng};

/// The random number generator layers use by default: small, fast, not cryptographic.
pub type Rng = rand::rngs::SmallRng;

/// A generator whose sequence is fixed by `seed`, for tests and reproducible runs.
pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// A generator seeded from the thread-local generator, for production use.
pub fn from_entropy() -> Rng {
    Rng::seed_from_u64(rand::rng().random())
}

#[cfg(test)]
mod tests {
    use rand::RngExt as _;

    #[test]
    fn seeded_generators_repeat() {
        let a: Vec<u32> = (0..4)
            .map({
                let mut rng = super::seeded(7);
                move |_| rng.random()
            })
            .collect();
        let b: Vec<u32> = (0..4)
            .map({
                let mut rng = super::seeded(7);
                move |_| rng.random()
            })
            .collect();
        assert_eq!(a, b);
    }
}
