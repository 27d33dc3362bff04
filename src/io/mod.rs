//! Small `Read`/`Write`/`Seek` adapters, each tested on its own and stacked into streams.

mod window;

pub use window::Window;
