// Key Vault for the secrets the response touches (the AI accounts' keys the rotation moves, ticket
// system credentials): RBAC authorization, purge protection, no public secrets in app settings.
param name string
param location string
param tags object = {}
param tenantId string = subscription().tenantId

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: without virtual network integration (a later increment) the Flex Consumption app reaches it over its public endpoint; access is Entra ID + RBAC only
  // checkov:skip=CKV_AZURE_189: without virtual network integration (a later increment) the Flex Consumption app reaches it over its public endpoint; access is Entra ID + RBAC only
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enablePurgeProtection: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
