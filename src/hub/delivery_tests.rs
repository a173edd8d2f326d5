//! Tests of the delivery guarantees at the hub: the replay buffer, the pending queue and
//! acknowledgements (unit tests and a property test of the state machine).
