//! [`Usd`]: money as an exact integer count of picodollars.
//!
//! Budgets are compared "to the cent" after millions of calls, so money is never a float in the
//! accounting. Prices are written per million tokens with up to six decimals (`0.075`), which
//! makes the price of *one* token a whole number of picodollars (10⁻¹² USD): every call's cost
//! is then exact, and the sum of the costs of many calls equals the cost of their summed
//! tokens. A `u64` of picodollars holds up to about $18 million, far more than one budget
//! window spends; arithmetic saturates rather than wraps.

use std::fmt;

const PICOS_PER_DOLLAR: u64 = 1_000_000_000_000;
const PICOS_PER_MICRO: u64 = 1_000_000;

/// An amount of US dollars, exact to the picodollar.
///
/// ```
/// use tollgate_budget::Usd;
///
/// let price_per_token = Usd::per_million_tokens(0.15).unwrap(); // gpt-4o-mini input
/// let cost = price_per_token * 1_000;
/// assert_eq!(cost, Usd::from_micros(150));
/// assert_eq!(cost.to_string(), "$0.00015");
/// assert_eq!(Usd::from_cents(2_500).to_string(), "$25.00");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u64);

impl Usd {
    /// Nothing.
    pub const ZERO: Self = Self(0);
    /// The most a `Usd` holds (about $18.4 million).
    pub const MAX: Self = Self(u64::MAX);

    /// `picos` picodollars (10⁻¹² USD).
    pub const fn from_picos(picos: u64) -> Self {
        Self(picos)
    }

    /// `micros` microdollars (10⁻⁶ USD).
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros.saturating_mul(PICOS_PER_MICRO))
    }

    /// `cents` cents.
    pub const fn from_cents(cents: u64) -> Self {
        Self(cents.saturating_mul(PICOS_PER_DOLLAR / 100))
    }

    /// The amount `dollars` written in a config file, rounded to the microdollar; `None` for a
    /// negative, non-finite or too large value. Floats stop here: everything after is integer.
    pub fn from_dollars(dollars: f64) -> Option<Self> {
        let micros = (dollars * 1e6).round();
        if !micros.is_finite() || micros < 0.0 || micros >= (u64::MAX / PICOS_PER_MICRO) as f64 {
            return None;
        }
        Some(Self::from_micros(micros as u64))
    }

    /// The price of one token when a million cost `dollars` (as price lists write them),
    /// exact for up to six decimals; `None` as for [`from_dollars`](Self::from_dollars).
    pub fn per_million_tokens(dollars: f64) -> Option<Self> {
        // $x per 10⁶ tokens = x·10⁶ picodollars per token.
        let picos = (dollars * 1e6).round();
        if !picos.is_finite() || picos < 0.0 || picos >= u64::MAX as f64 {
            return None;
        }
        Some(Self(picos as u64))
    }

    /// The amount in picodollars.
    pub const fn picos(self) -> u64 {
        self.0
    }

    /// The amount in dollars, approximately: for display and metrics only.
    pub fn as_dollars_f64(self) -> f64 {
        self.0 as f64 / PICOS_PER_DOLLAR as f64
    }

    /// The price of one token ([`per_million_tokens`](Self::per_million_tokens)) back in
    /// dollars per million tokens, approximately.
    pub fn as_per_million_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self + other`, at most [`MAX`](Self::MAX).
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, at least zero.
    #[must_use]
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    /// `self × n`, at most [`MAX`](Self::MAX).
    #[must_use]
    pub const fn saturating_mul(self, n: u64) -> Self {
        Self(self.0.saturating_mul(n))
    }

    /// `self × parts / 1_000_000`, rounded down (a discount or a share in parts per million).
    #[must_use]
    pub const fn scaled_ppm(self, parts: u32) -> Self {
        let scaled = (self.0 as u128 * parts as u128) / 1_000_000;
        Self(if scaled > u64::MAX as u128 {
            u64::MAX
        } else {
            scaled as u64
        })
    }
}

impl std::ops::Add for Usd {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        self.saturating_add(other)
    }
}

impl std::ops::Mul<u64> for Usd {
    type Output = Self;
    fn mul(self, n: u64) -> Self {
        self.saturating_mul(n)
    }
}

impl std::iter::Sum for Usd {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Self::saturating_add)
    }
}

/// `$25.00`, `$0.0105`, `$0.000000075`: at least the cents, and every further digit there is.
impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dollars = self.0 / PICOS_PER_DOLLAR;
        let fraction = format!("{:012}", self.0 % PICOS_PER_DOLLAR);
        let trimmed = fraction.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &fraction[..2]
        } else {
            trimmed
        };
        write!(f, "${dollars}.{shown}")
    }
}

impl fmt::Debug for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Usd({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_show_the_cents_and_every_digit_after() {
        assert_eq!(Usd::ZERO.to_string(), "$0.00");
        assert_eq!(Usd::from_cents(1).to_string(), "$0.01");
        assert_eq!(Usd::from_dollars(25.0).unwrap().to_string(), "$25.00");
        assert_eq!(Usd::from_micros(10_500).to_string(), "$0.0105");
        assert_eq!(Usd::from_picos(75_000).to_string(), "$0.000000075");
    }

    #[test]
    fn prices_per_million_are_whole_picodollars_per_token() {
        assert_eq!(Usd::per_million_tokens(2.5).unwrap().picos(), 2_500_000);
        assert_eq!(Usd::per_million_tokens(0.075).unwrap().picos(), 75_000);
        assert_eq!(Usd::per_million_tokens(0.025).unwrap().picos(), 25_000);
        assert_eq!(Usd::per_million_tokens(-1.0), None);
        assert_eq!(Usd::from_dollars(f64::NAN), None);
        // A million tokens at $0.15/M is 15 cents, exactly.
        assert_eq!(
            Usd::per_million_tokens(0.15).unwrap() * 1_000_000,
            Usd::from_cents(15)
        );
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Usd::MAX + Usd::from_cents(1), Usd::MAX);
        assert_eq!(Usd::ZERO.saturating_sub(Usd::from_cents(1)), Usd::ZERO);
        assert_eq!(
            Usd::from_cents(100).scaled_ppm(500_000),
            Usd::from_cents(50)
        );
    }
}
