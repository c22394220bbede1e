//! The controller's ports, handed to it by the binary: the transport (the settings cache the
//! workers read) and, optionally, the durable store. Each is connected by the caller's function
//! on first use and kept once connected, so the controller starts, and reports the backend in
//! its status, while Redis or the database is down.

use crate::error::ControllerError;
use futures::future::BoxFuture;
use jobsched_core::ports::{Store, Transport};
use std::future::Future;
use std::sync::Arc;

/// How to connect a port: called again after each failure, until it succeeds once.
type Connect<T> = Box<dyn Fn() -> BoxFuture<'static, jobsched_core::Result<Arc<T>>> + Send + Sync>;

/// A port connected on first use.
struct Lazy<T: ?Sized> {
    connect: Option<Connect<T>>,
    cell: tokio::sync::Mutex<Option<Arc<T>>>,
}

impl<T: ?Sized> Lazy<T> {
    fn new<F, Fut>(connect: F) -> Lazy<T>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = jobsched_core::Result<Arc<T>>> + Send + 'static,
    {
        Lazy {
            connect: Some(Box::new(move || Box::pin(connect()))),
            cell: tokio::sync::Mutex::new(None),
        }
    }

    fn ready(port: Arc<T>) -> Lazy<T> {
        Lazy {
            connect: None,
            cell: tokio::sync::Mutex::new(Some(port)),
        }
    }

    async fn get(&self) -> jobsched_core::Result<Arc<T>> {
        let mut cell = self.cell.lock().await;
        if let Some(port) = cell.as_ref() {
            return Ok(port.clone());
        }
        // A port made `ready` is never empty, so `connect` is there whenever it is needed.
        let Some(connect) = self.connect.as_ref() else {
            return Err(jobsched_core::Error::backend("port", "no way to connect"));
        };
        let port = connect().await?;
        *cell = Some(port.clone());
        Ok(port)
    }
}

impl<T: ?Sized> std::fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connected = self.cell.try_lock().map(|c| c.is_some()).ok();
        f.debug_struct("Lazy")
            .field("connected", &connected)
            .finish_non_exhaustive()
    }
}

/// A port connected on first use, or [`ready`](Port::ready).
pub struct Port<T: ?Sized>(Arc<Lazy<T>>);

impl<T: ?Sized> Clone for Port<T> {
    fn clone(&self) -> Self {
        Port(self.0.clone())
    }
}

impl<T: ?Sized> std::fmt::Debug for Port<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: ?Sized> Port<T> {
    /// Connected by `connect` on first use (retried at each use until it succeeds).
    pub fn connect_with<F, Fut>(connect: F) -> Port<T>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = jobsched_core::Result<Arc<T>>> + Send + 'static,
    {
        Port(Arc::new(Lazy::new(connect)))
    }

    /// Already connected.
    pub fn ready(port: Arc<T>) -> Port<T> {
        Port(Arc::new(Lazy::ready(port)))
    }
}

/// The transport port (Redis in a cluster).
pub type TransportPort = Port<dyn Transport>;

/// The durable store port (Postgres in a cluster).
pub type StorePort = Port<dyn Store>;

impl Port<dyn Transport> {
    pub(crate) async fn get(&self) -> Result<Arc<dyn Transport>, ControllerError> {
        self.0
            .get()
            .await
            .map_err(|source| ControllerError::Redis { source })
    }
}

impl Port<dyn Store> {
    pub(crate) async fn get(&self) -> Result<Arc<dyn Store>, ControllerError> {
        self.0
            .get()
            .await
            .map_err(|source| ControllerError::Store { source })
    }
}

/// What the controller writes to.
#[derive(Clone, Debug)]
pub struct Ports {
    /// The settings cache every worker reads (and its events).
    pub transport: TransportPort,
    /// The durable copy of the settings, and the `JobSchedule`s; without it only the
    /// transport is written and `JobSchedule`s are not followed.
    pub store: Option<StorePort>,
}
