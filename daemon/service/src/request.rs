//! The life of one request as the service sees it, independent of how clients watch it.

/// Where a request is: adapters show it (`Request.State` on the bus) but never decide by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Accepted, its task not started yet.
    Queued,
    /// Its task started: waiting for a slot, then executing.
    Running,
    /// Done, whatever the outcome.
    Finished,
}

impl RequestState {
    /// The name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Queued => "queued",
            RequestState::Running => "running",
            RequestState::Finished => "finished",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RequestState;

    #[test]
    fn names_clients_see() {
        let names = [
            RequestState::Queued,
            RequestState::Running,
            RequestState::Finished,
        ]
        .map(RequestState::as_str);
        assert_eq!(names, ["queued", "running", "finished"]);
    }
}
