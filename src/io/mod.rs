//! Small `Read`/`Write`/`Seek` adapters, each tested on its own and stacked into streams.

mod block_cache;
mod concat;
mod limit;
mod progress;
mod sync;
mod sync_on_flush;
mod window;
mod zero;

pub use block_cache::BlockCache;
pub use concat::{open_with_parts, Concat};
pub use limit::Limited;
pub use progress::{Progress, Show};
pub use sync::SyncAll;
pub use sync_on_flush::SyncOnFlush;
pub use window::Window;
pub use zero::{write_zeros, ZeroRange};
