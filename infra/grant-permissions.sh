#!/usr/bin/env bash
# What ARM cannot grant, done with the Azure CLI by someone who may consent for the tenant
# (Privileged Role Administrator or Global Administrator):
#   1. the Entra ID app registration people sign in to the console with (App Service Authentication),
#      with the app roles Aegis.Approver, Aegis.Analyst and Aegis.Reader: assign people or groups to them;
#   2. the application permissions of the app's managed identity on Microsoft Graph and on Defender for
#      Endpoint: app-role assignments on its service principal, each the least an action needs;
#   3. the console's browser sign-in (Flex Consumption does not enforce App Service Authentication, so
#      the app signs people in itself): the redirect URIs, and a federated credential that lets the
#      app's managed identity prove the app registration when it redeems a code (no client secret).
# Idempotent: what exists is left as it is.
#   infra/grant-permissions.sh create-app                 # prints AEGIS_AUTH_CLIENT_ID for `azd env set`
#   infra/grant-permissions.sh grant <principal id>       # after `azd provision` (output AEGIS_MANAGED_IDENTITY_PRINCIPAL_ID)
#   infra/grant-permissions.sh signin <client id> <console url> <principal id>   # after `azd provision` too
set -euo pipefail

GRAPH_APP=00000003-0000-0000-c000-000000000000   # Microsoft Graph
MDE_APP=fc780465-2017-40d4-a0c5-307022471b92     # WindowsDefenderATP (Defender for Endpoint API)

# Graph application permissions and what needs each:
GRAPH_PERMISSIONS=(
  User.RevokeSessions.All          # revoke_sessions
  User.EnableDisableAccount.All    # disable_user, enable_user
  User.Read.All                    # disable_user / enable_user by UPN; the graph enricher (users, managers)
  Application.Read.All             # the graph enricher (service principals, owners)
  GroupMember.Read.All             # escalation: @mention the on-call group's members; Teams decisions: group membership
  SecurityAlert.Read.All           # defender_xdr delivery: find the XDR alerts of an incident
  SecurityIncident.ReadWrite.All   # defender_xdr delivery: comment on the XDR incident
  AuditLog.Read.All                # corroboration (entra): the user's sign-in records
)
# Defender for Endpoint application permissions:
MDE_PERMISSIONS=(
  Machine.Isolate                  # isolate_endpoint, release_endpoint
  Machine.Read.All                 # isolate_endpoint by host name (machine lookup)
)
# Teams messages (approval cards, escalations, SOC notices, notify) need no Graph permission: they go
# through the Azure Bot on the same managed identity (infra/modules/bot.bicep), installed in the team
# with the Teams app `aegis teams manifest` writes.

create_app() {
  local name=${1:-aegis-console} id
  id=$(az ad app list --display-name "$name" --query "[0].appId" -o tsv)
  if [ -z "$id" ]; then
    local roles
    roles=$(cat <<JSON
[{"allowedMemberTypes":["User","Application"],"displayName":"Aegis approver","description":"Approve or deny disruptive response steps","isEnabled":true,"value":"Aegis.Approver","id":"$(uuidgen)"},
 {"allowedMemberTypes":["User"],"displayName":"Aegis analyst","description":"Triage incidents: acknowledge, assign, close, comment","isEnabled":true,"value":"Aegis.Analyst","id":"$(uuidgen)"},
 {"allowedMemberTypes":["User","Application"],"displayName":"Aegis reader","description":"Read incidents, approvals and the audit log","isEnabled":true,"value":"Aegis.Reader","id":"$(uuidgen)"}]
JSON
)
    id=$(az ad app create --display-name "$name" --sign-in-audience AzureADMyOrg \
      --enable-id-token-issuance true --app-roles "$roles" --query appId -o tsv)
    az ad app update --id "$id" --identifier-uris "api://$id"
    az ad sp create --id "$id" >/dev/null
  fi
  echo "AEGIS_AUTH_CLIENT_ID=$id   # azd env set AEGIS_AUTH_CLIENT_ID $id"
}

signin() {  # client id of the console's app registration, console URL (AEGIS_CONSOLE_URL), managed identity principal id
  local app=$1 url=${2%/} principal=$3 tenant
  tenant=$(az account show --query tenantId -o tsv)
  # where Entra ID posts the code (form_post), and where signing out comes back to
  az ad app update --id "$app" --web-redirect-uris "$url/console/signin/callback" "$url/console" \
    "$url/.auth/login/aad/callback"
  if az ad app federated-credential list --id "$app" --query "[?subject=='$principal'] | [0].name" -o tsv | grep -q .; then
    echo "already trusted: the managed identity $principal"
    return 0
  fi
  az ad app federated-credential create --id "$app" --parameters "{\"name\": \"aegis-function-app\",
    \"issuer\": \"https://login.microsoftonline.com/$tenant/v2.0\", \"subject\": \"$principal\",
    \"audiences\": [\"api://AzureADTokenExchange\"],
    \"description\": \"The Function App's managed identity redeems the console's sign-in codes\"}" >/dev/null
  echo "trusted: the managed identity $principal signs in for $app"
}

grant() {  # principal id, resource app id, permission
  local principal=$1 resource sp role
  resource=$2
  sp=$(az ad sp show --id "$resource" --query id -o tsv)
  role=$(az ad sp show --id "$resource" --query "appRoles[?value=='$3'].id | [0]" -o tsv)
  [ -n "$role" ] || { echo "grant-permissions: $3 is not an application permission of $resource" >&2; return 1; }
  if az rest --method GET --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$principal/appRoleAssignments" \
       --query "value[?appRoleId=='$role' && resourceId=='$sp'] | [0].id" -o tsv | grep -q .; then
    echo "already granted: $3"
    return 0
  fi
  az rest --method POST --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$principal/appRoleAssignments" \
    --headers "Content-Type=application/json" \
    --body "{\"principalId\": \"$principal\", \"resourceId\": \"$sp\", \"appRoleId\": \"$role\"}" >/dev/null
  echo "granted: $3"
}

case "${1:-}" in
  create-app) create_app "${2:-}" ;;
  grant)
    principal=${2:?usage: grant-permissions.sh grant <principal id of the managed identity>}
    for p in "${GRAPH_PERMISSIONS[@]}"; do grant "$principal" "$GRAPH_APP" "$p"; done
    for p in "${MDE_PERMISSIONS[@]}"; do grant "$principal" "$MDE_APP" "$p"; done
    ;;
  signin)
    signin "${2:?usage: grant-permissions.sh signin <client id> <console url> <principal id>}" \
      "${3:?usage: grant-permissions.sh signin <client id> <console url> <principal id>}" \
      "${4:?usage: grant-permissions.sh signin <client id> <console url> <principal id>}"
    ;;
  *) echo "usage: $0 create-app [name] | grant <managed identity principal id> | signin <client id> <console url> <principal id>" >&2
     exit 2 ;;
esac
