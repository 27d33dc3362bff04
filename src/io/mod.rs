//! Small `Read`/`Write`/`Seek` adapters, each tested on its own and stacked into streams.

mod block_cache;
mod concat;
pub mod heartbeat;
mod limit;
mod open;
mod progress;
mod sync;
mod sync_on_flush;
mod window;
mod write_behind;
mod zero;

pub use block_cache::BlockCache;
pub use concat::{open_with_parts, Concat};
pub use limit::Limited;
pub use open::{open_file_or_device, open_regular, read_regular_to_string};
pub use progress::{Progress, Show};
pub use sync::SyncAll;
pub use sync_on_flush::SyncOnFlush;
pub use window::Window;
pub use write_behind::WriteBehind;
pub use zero::{write_zeros, ZeroRange};
