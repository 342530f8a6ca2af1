//! The StatsD side of tallyd: the line protocol ([`parse`]) and the sockets that receive it
//! ([`listener`]).

pub mod listener;
pub mod parse;
