// Defender for Cloud continuous export of the subscription's alerts to the alerts hub. Export can
// only send with a SAS connection string: the namespace's Send-only rule, nothing more.
param name string
param location string
param tags object = {}
param alertsHubId string
param sendRuleId string

resource automation 'Microsoft.Security/automations@2023-12-01-preview' = {
  name: name
  location: location
  tags: tags
  properties: {
    description: 'Aegis: Defender for Cloud alerts to the ingest hub'
    isEnabled: true
    scopes: [{ description: 'the subscription', scopePath: subscription().id }]
    sources: [{ eventSource: 'Alerts' }]
    actions: [
      {
        actionType: 'EventHub'
        eventHubResourceId: alertsHubId
        connectionString: listKeys(sendRuleId, '2024-01-01').primaryConnectionString
        isTrustedServiceEnabled: true
      }
    ]
  }
}

output id string = automation.id
