// Diagnostic settings on an existing AI account (Azure OpenAI / AI Foundry / AI services): all its
// resource logs to the diagnostics hub. Deployed in the account's own resource group.
param accountName string
param hubName string
param sendRuleId string
param settingName string = 'aegis'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: account
  properties: {
    eventHubAuthorizationRuleId: sendRuleId
    eventHubName: hubName
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
  }
}
