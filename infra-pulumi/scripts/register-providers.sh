#!/usr/bin/env bash
# Registers the Azure resource providers the connector uses in one subscription (once per
# subscription; azure-native has no resource for provider registration). Idempotent.
#   bash infra-pulumi/scripts/register-providers.sh <subscription-id>
set -euo pipefail
subscription="${1:?usage: register-providers.sh <subscription-id>}"
for ns in Microsoft.Storage Microsoft.ServiceBus Microsoft.EventGrid Microsoft.Web Microsoft.KeyVault \
          Microsoft.Insights Microsoft.OperationalInsights Microsoft.Logic Microsoft.SecurityInsights; do
  az provider register --subscription "$subscription" --namespace "$ns" --wait
  echo "$ns: $(az provider show --subscription "$subscription" --namespace "$ns" --query registrationState -o tsv)"
done
