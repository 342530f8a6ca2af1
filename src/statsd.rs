//! The StatsD side of tallyd: the line protocol ([`parse`]), the sockets that receive it
//! ([`listener`]) and the batched receive of datagrams ([`receive`]).

pub mod listener;
pub mod parse;
pub mod receive;
