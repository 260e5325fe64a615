//! Job queues. [`MemoryQueue`] is the in-process queue of the embedded mode; it has the
//! semantics the RabbitMQ queue has in the fleet (deliver, ack after checkpoint, retry with
//! delay), so the worker code cannot tell them apart.

mod memory;

pub use memory::MemoryQueue;
