#!/usr/bin/env bash
# azd preprovision hook: the values the deployment needs that only Entra ID or the environment knows.
#   AEGIS_DEFENDER_PRINCIPAL_ID  the object id of Defender for Cloud's service principal ("Windows Azure
#                                Security Resource Provider") in this tenant: continuous export sends to
#                                the alerts hub as that trusted service, with a role on the hub, not a key.
#   AEGIS_VAULT_SUFFIX           a random suffix of the Key Vault's name, kept in the azd environment and
#                                cleared by the postdown hook: purge protection keeps a deleted vault's
#                                name for 90 days, so `azd down` then `azd up` gets a vault of a new name.
set -euo pipefail

if [ -z "$(azd env get-value AEGIS_DEFENDER_PRINCIPAL_ID 2>/dev/null || true)" ]; then
  id=$(az ad sp list --display-name "Windows Azure Security Resource Provider" --query "[0].id" -o tsv)
  if [ -z "$id" ]; then
    echo "Defender for Cloud's service principal is not in this tenant: register the provider first" >&2
    echo "  (az provider register --namespace Microsoft.Security), then run azd provision again" >&2
    exit 1
  fi
  azd env set AEGIS_DEFENDER_PRINCIPAL_ID "$id"
fi

if [ -z "$(azd env get-value AEGIS_VAULT_SUFFIX 2>/dev/null || true)" ]; then
  azd env set AEGIS_VAULT_SUFFIX "$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"
fi
