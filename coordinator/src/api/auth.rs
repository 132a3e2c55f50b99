//! Who is calling, and may they: every operator RPC names the role it needs
//! in an environment, and gets the caller's identity back.

use runway_identity::Identity;
use runway_identity::tls::Security;

use super::Shared;
use super::error::ApiError;
use crate::config::Role;

/// The operator behind a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// From the certificate's `runway://operator/NAME`; `insecure` in
    /// insecure mode, where nobody is identified.
    pub name: String,
}

/// The name every caller has in insecure mode.
pub const INSECURE_OPERATOR: &str = "insecure";

/// The identity a request's client certificate names (`None` in insecure
/// mode). TLS already checked the certificate chains to the runway CA.
pub fn peer_identity<T>(
    security: &Security,
    request: &tonic::Request<T>,
) -> Result<Option<Identity>, ApiError> {
    if matches!(security, Security::Insecure) {
        return Ok(None);
    }
    let certs = request
        .peer_certs()
        .ok_or_else(|| ApiError::Unauthenticated("the call carries no client certificate".into()))?;
    let first = certs
        .first()
        .ok_or_else(|| ApiError::Unauthenticated("the call carries no client certificate".into()))?;
    Identity::from_der(first).map(Some).map_err(|e| ApiError::Unauthenticated(e.to_string()))
}

impl Shared {
    /// The operator behind `request`, whatever their roles.
    pub fn operator<T>(&self, request: &tonic::Request<T>) -> Result<Operator, ApiError> {
        match peer_identity(&self.security, request)? {
            None => Ok(Operator { name: INSECURE_OPERATOR.into() }),
            Some(Identity::Operator { name, .. }) => Ok(Operator { name }),
            Some(other) => Err(ApiError::PermissionDenied(format!(
                "{other} is not an operator: operator calls need a certificate naming runway://operator/NAME"
            ))),
        }
    }

    /// The operator behind `request` if they hold `role` in `environment`
    /// (which must be one this coordinator knows). In insecure mode every
    /// caller holds every role.
    pub fn authorize<T>(
        &self,
        request: &tonic::Request<T>,
        environment: &str,
        role: Role,
    ) -> Result<Operator, ApiError> {
        // Who first: a caller that is not an operator learns nothing, not
        // even which environments exist.
        let operator = self.operator(request)?;
        self.known_environment(environment)?;
        if matches!(self.security, Security::Insecure)
            || self.config.environments.policy(environment).allows(&operator.name, role)
        {
            return Ok(operator);
        }
        Err(ApiError::PermissionDenied(format!(
            "operator {} lacks the {role} role in {environment} (granted in the coordinator config: \
             [environments.{environment}] roles = {{ {} = [\"{role}\"] }})",
            operator.name, operator.name
        )))
    }

    /// Whether `operator` holds `role` in `environment`, for filtering lists.
    pub fn allows(&self, operator: &Operator, environment: &str, role: Role) -> bool {
        matches!(self.security, Security::Insecure)
            || self.config.environments.policy(environment).allows(&operator.name, role)
    }
}
