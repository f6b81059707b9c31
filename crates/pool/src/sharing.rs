//! What the pool tells the fleet's shared state (feature `redis`, [`RedisPoolState`]) when a
//! member goes out of rotation or is reset. Without the feature, or without shared state,
//! [`Sharing`] is empty and its methods do nothing, so call sites need no `cfg`.
//!
//! [`RedisPoolState`]: crate::RedisPoolState

/// The pool's link to its fleet, if any.
#[derive(Debug, Default)]
pub(crate) struct Sharing {
    #[cfg(feature = "redis")]
    pub(crate) fleet: Option<std::sync::Arc<crate::fleet::Fleet>>,
}

impl Sharing {
    /// `member` went out of rotation (or longer): the fleet hears of it.
    #[inline]
    pub(crate) fn cooled(&self, member: usize) {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            fleet.cooled(member);
        }
        #[cfg(not(feature = "redis"))]
        let _ = member;
    }

    /// `member` was put back in rotation by hand: the fleet puts it back too.
    #[inline]
    pub(crate) fn reset(&self, member: usize) {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            fleet.reset(member);
        }
        #[cfg(not(feature = "redis"))]
        let _ = member;
    }
}
