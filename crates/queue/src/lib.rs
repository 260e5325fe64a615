//! Job queues. [`MemoryQueue`] is the in-process queue of the embedded mode; [`AmqpQueue`]
//! is the fleet's, on RabbitMQ. Both have the same semantics (deliver, ack after the
//! checkpoint, retry with delay, dead-letter), so the worker code cannot tell them apart.

mod amqp;
mod memory;
pub mod trace;

pub use amqp::AmqpQueue;
pub use memory::MemoryQueue;
