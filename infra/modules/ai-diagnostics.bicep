// Diagnostic settings on an existing AI account (Azure OpenAI / AI Foundry / AI services): all its
// resource logs to the diagnostics hub of the namespace in the account's own region (Azure Monitor
// sends only there). Deployed in the account's own resource group. An account in a region that
// `diagnosticsRegions` does not name fails the deployment, naming that region.
param accountName string
param hubName string
@description('The regions that have a namespace (as ARM writes them: westeurope), in the order of sendRules.')
param regions array
@description('The Send-only rule of each region\'s namespace.')
param sendRules array
param settingName string = 'aegis'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: account
  properties: {
    eventHubAuthorizationRuleId: sendRules[indexOf(regions, account.location)] // none in its region: ARM says so
    eventHubName: hubName
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
  }
}
